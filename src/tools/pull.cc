// selfcond pull: the Hugging Face hub protocol over libcurl (see pull.h for the protocol, the
// cache layout and the retry behaviour).
#include "tools/pull.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "util/file_util.h"
#include "util/json.h"
#include "util/sha256.h"

#if SELFCOND_HAVE_CURL
// libcurl is opened with dlopen when a pull runs, not linked: linked, its ~25 libraries (TLS,
// HTTP/2, LDAP, ...) load into every selfcond command and add ~7 MB to the resident memory of
// `generate` too. Only curl.h's types and constants are used at build time.
#define CURL_DISABLE_TYPECHECK 1
#include <curl/curl.h>
#include <dlfcn.h>

namespace selfcond {
namespace {

struct CurlApi {
  CURLcode (*global_init)(long);
  CURL* (*easy_init)();
  CURLcode (*easy_setopt)(CURL*, CURLoption, ...);
  CURLcode (*easy_perform)(CURL*);
  void (*easy_reset)(CURL*);
  void (*easy_cleanup)(CURL*);
  const char* (*easy_strerror)(CURLcode);
  curl_slist* (*slist_append)(curl_slist*, const char*);
  void (*slist_free_all)(curl_slist*);
};

// The library, loaded once; an error names what is missing.
const absl::StatusOr<CurlApi>& LoadCurl() {
  static const absl::StatusOr<CurlApi> api = []() -> absl::StatusOr<CurlApi> {
    void* lib = nullptr;
    for (const char* name : {"libcurl.so.4", "libcurl.so", "libcurl-gnutls.so.4"}) {
      if ((lib = dlopen(name, RTLD_NOW | RTLD_LOCAL)) != nullptr) break;
    }
    if (lib == nullptr) {
      return absl::FailedPreconditionError(
          "selfcond pull needs libcurl (libcurl.so.4; Debian: apt-get install libcurl4)");
    }
    CurlApi a;
    bool ok = true;
    auto sym = [&](auto* fn, const char* name) {
      void* f = dlsym(lib, name);
      ok = ok && f != nullptr;
      *fn = reinterpret_cast<std::remove_pointer_t<decltype(fn)>>(f);
    };
    sym(&a.global_init, "curl_global_init");
    sym(&a.easy_init, "curl_easy_init");
    sym(&a.easy_setopt, "curl_easy_setopt");
    sym(&a.easy_perform, "curl_easy_perform");
    sym(&a.easy_reset, "curl_easy_reset");
    sym(&a.easy_cleanup, "curl_easy_cleanup");
    sym(&a.easy_strerror, "curl_easy_strerror");
    sym(&a.slist_append, "curl_slist_append");
    sym(&a.slist_free_all, "curl_slist_free_all");
    if (!ok) return absl::FailedPreconditionError("libcurl lacks a function selfcond pull uses");
    return a;
  }();
  return api;
}
const CurlApi& Curl() { return *LoadCurl(); }  // after LoadCurl() succeeded

}  // namespace
}  // namespace selfcond

// The calls below go through the loaded library.
#undef curl_global_init
#define curl_global_init Curl().global_init
#undef curl_easy_init
#define curl_easy_init Curl().easy_init
#undef curl_easy_setopt
#define curl_easy_setopt Curl().easy_setopt
#undef curl_easy_perform
#define curl_easy_perform Curl().easy_perform
#undef curl_easy_reset
#define curl_easy_reset Curl().easy_reset
#undef curl_easy_cleanup
#define curl_easy_cleanup Curl().easy_cleanup
#undef curl_easy_strerror
#define curl_easy_strerror Curl().easy_strerror
#undef curl_slist_append
#define curl_slist_append Curl().slist_append
#undef curl_slist_free_all
#define curl_slist_free_all Curl().slist_free_all
#endif

namespace selfcond {
namespace fs = std::filesystem;

namespace {

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

bool IsHex(absl::string_view s) {
  for (char c : s) {
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(c))) return false;
  }
  return !s.empty();
}

bool IsCommit(absl::string_view s) { return s.size() == 40 && IsHex(s); }

// RFC 3986 unreserved characters stay, the rest is %XX ('/' too unless keep_slash): Python's
// urllib.parse.quote(s, safe="/" or "").
[[maybe_unused]] std::string PercentEncode(absl::string_view s, bool keep_slash) {
  std::string out;
  for (unsigned char c : s) {
    if (absl::ascii_isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~' ||
        (keep_slash && c == '/')) {
      out.push_back(static_cast<char>(c));
    } else {
      static const char kHex[] = "0123456789ABCDEF";
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

// Printable, for messages (a hostile server's text must not drive the terminal).
std::string Printable(absl::string_view s, size_t max = 300) {
  std::string out;
  for (unsigned char c : s.substr(0, max)) out.push_back(c >= 0x20 && c < 0x7f ? c : '?');
  if (s.size() > max) out += "...";
  return out;
}

// A revision becomes a path under refs/: the checks of a file name, and printable ASCII.
absl::Status ValidateRevision(const std::string& rev) {
  if (rev.empty() || rev.size() > 256) {
    return absl::InvalidArgumentError(absl::StrCat("bad revision '", Printable(rev), "'"));
  }
  if (!ValidateRepoFileName(rev).ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad revision '", Printable(rev),
                     "': want a branch, tag or commit sha (no '..', empty or absolute parts)"));
  }
  for (unsigned char c : rev) {
    if (c <= 0x20 || c >= 0x7f) {
      return absl::InvalidArgumentError(absl::StrCat("bad revision '", Printable(rev), "'"));
    }
  }
  return absl::OkStatus();
}

// huggingface_hub's repo_folder_name: models--owner--name.
std::string RepoFolderName(const std::string& repo) {
  return "models--" + absl::StrJoin(absl::StrSplit(repo, '/'), "--");
}

// What the converter reads, chosen from the repo's file names.
struct Selection {
  std::vector<std::string> files;  // config, weights (or index), tokenizer files
  std::string index;               // the sharded weights' index, if any
};

absl::StatusOr<Selection> SelectFiles(const std::set<std::string>& have, const std::string& what) {
  Selection s;
  if (!have.count("config.json")) {
    return absl::NotFoundError(
        absl::StrCat(what, " has no config.json: not a transformers checkpoint"));
  }
  s.files.push_back("config.json");
  bool weights = false;
  for (const char* w : {"model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                        "pytorch_model.bin.index.json"}) {
    if (have.count(w)) {
      s.files.push_back(w);
      if (absl::EndsWith(w, ".index.json")) s.index = w;
      weights = true;
      break;
    }
  }
  if (!weights) {
    return absl::NotFoundError(
        absl::StrCat(what,
                     " has no model.safetensors, pytorch_model.bin or sharded index of them "
                     "(TensorFlow, Flax, ONNX and GGUF weights are not supported)"));
  }
  for (const char* t : {"vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json",
                        "special_tokens_map.json", "generation_config.json"}) {
    if (have.count(t)) s.files.push_back(t);
  }
  return s;
}

// The shard file names of a sharded checkpoint's index (weight_map values), checked.
absl::StatusOr<std::vector<std::string>> ShardsOfIndex(const std::string& path,
                                                       const std::string& name) {
  auto text = ReadFile(path);
  if (!text.ok()) return text.status();
  auto doc = json::Parse(*text);
  if (!doc.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": ", doc.status().message()));
  }
  const json::Value* map = doc->Find("weight_map");
  if (!map || !map->is_object() || map->members().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": no weight_map object"));
  }
  std::set<std::string> shards;
  for (const auto& [key, v] : map->members()) {
    if (!v.is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, ": weight_map[\"", Printable(std::string(key)), "\"] is not a file name"));
    }
    std::string f(v.as_string());
    absl::Status st = ValidateRepoFileName(f);
    if (!st.ok()) return absl::InvalidArgumentError(absl::StrCat(name, ": ", st.message()));
    shards.insert(f);
  }
  if (shards.size() > 100000) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": too many shards"));
  }
  return std::vector<std::string>(shards.begin(), shards.end());
}

bool IsRegularFile(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);  // follows the snapshot's symlinks
}

// The snapshot of a cached commit, if it holds every file the converter needs (offline use).
absl::StatusOr<std::string> CachedSnapshot(const fs::path& repo_dir, const std::string& repo,
                                           const std::string& revision) {
  std::string commit = revision;
  if (!IsCommit(revision)) {
    auto ref = ReadFile((repo_dir / "refs" / revision).string());
    if (!ref.ok()) {
      return absl::NotFoundError(
          absl::StrCat(repo, "@", revision, " is not in the cache (", repo_dir.string(), ")"));
    }
    commit = std::string(absl::StripAsciiWhitespace(*ref));
    if (!IsCommit(commit)) {
      return absl::DataLossError(
          absl::StrCat((repo_dir / "refs" / revision).string(), ": not a commit sha"));
    }
  }
  const fs::path snap = repo_dir / "snapshots" / commit;
  std::set<std::string> have;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(snap, ec), end; !ec && it != end; it.increment(ec)) {
    if (IsRegularFile(it->path()))
      have.insert(it->path().lexically_relative(snap).generic_string());
  }
  const std::string what = absl::StrCat("the cached snapshot ", snap.string());
  auto sel = SelectFiles(have, what);
  if (!sel.ok()) return sel.status();
  std::vector<std::string> need = sel->files;
  if (!sel->index.empty()) {
    auto shards = ShardsOfIndex((snap / sel->index).string(), sel->index);
    if (!shards.ok()) return shards.status();
    need.insert(need.end(), shards->begin(), shards->end());
  }
  for (const std::string& f : need) {
    if (!have.count(f)) {
      return absl::NotFoundError(absl::StrCat(what, " lacks ", f));
    }
  }
  return snap.string();
}

}  // namespace

std::string DefaultPullCacheDir() {
  std::string d = Env("SELFCOND_CACHE");
  if (!d.empty()) return d;
  d = Env("XDG_CACHE_HOME");
  if (!d.empty()) return (fs::path(d) / "selfcond").string();
  d = Env("HOME");
  if (!d.empty()) return (fs::path(d) / ".cache" / "selfcond").string();
  return "";
}

PullOptions PullOptionsFromEnv() {
  PullOptions o;
  o.endpoint = Env("HF_ENDPOINT");
  o.token = Env("HF_TOKEN");
  if (o.token.empty()) o.token = Env("HUGGING_FACE_HUB_TOKEN");
  o.cache_dir = DefaultPullCacheDir();
  const std::string off = absl::AsciiStrToLower(Env("HF_HUB_OFFLINE"));
  o.offline = off == "1" || off == "true" || off == "yes" || off == "on";
  return o;
}

absl::Status ValidateRepoId(const std::string& repo) {
  auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bad repo id '", Printable(repo), "': ", why,
        " (want NAME or OWNER/NAME of letters, digits, '_', '-' and '.', as on huggingface.co)"));
  };
  if (repo.empty()) return bad("empty");
  if (repo.size() > 96) return bad("longer than 96 characters");
  if (absl::StrContains(repo, "--") || absl::StrContains(repo, "..")) {
    return bad("'--' and '..' are not allowed");
  }
  const std::vector<std::string> parts = absl::StrSplit(repo, '/');
  if (parts.size() > 2) return bad("more than one '/'");
  for (const std::string& p : parts) {
    if (p.empty()) return bad("empty owner or name");
    for (unsigned char c : p) {
      if (!absl::ascii_isalnum(c) && c != '_' && c != '-' && c != '.') {
        return bad(absl::StrCat("character '", Printable(std::string(1, c)), "'"));
      }
    }
    auto word = [](unsigned char c) { return absl::ascii_isalnum(c) || c == '_'; };
    if (!word(p.front()) || !word(p.back())) {
      return bad("owner and name must start and end with a letter, digit or '_'");
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateRepoFileName(const std::string& name) {
  auto bad = [&](const char* why) {
    return absl::InvalidArgumentError(
        absl::StrCat("refusing file name '", Printable(name), "' from the server: ", why));
  };
  if (name.empty() || name.size() > 1024) return bad("empty or too long");
  if (name.front() == '/') return bad("absolute path");
  for (unsigned char c : name) {
    if (c < 0x20 || c == 0x7f || c == '\\') return bad("control character or backslash");
  }
  for (absl::string_view part : absl::StrSplit(name, '/')) {
    if (part.empty() || part == "." || part == "..") return bad("empty, '.' or '..' component");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::pair<std::string, std::string>> ParseRepoSpec(const std::string& spec) {
  std::string repo = spec, rev = "main";
  const size_t at = spec.find('@');
  if (at != std::string::npos) {
    repo = spec.substr(0, at);
    rev = spec.substr(at + 1);
    absl::Status st = ValidateRevision(rev);
    if (!st.ok()) return st;
  }
  absl::Status st = ValidateRepoId(repo);
  if (!st.ok()) return st;
  return std::make_pair(repo, rev);
}

#if !SELFCOND_HAVE_CURL

absl::StatusOr<std::string> PullSnapshot(
    const PullOptions& opts, std::function<void(uint64_t, uint64_t, const std::string&)>) {
  absl::Status st = ValidateRepoId(opts.repo);
  if (!st.ok()) return st;
  if (opts.offline && !opts.cache_dir.empty()) {
    return CachedSnapshot(fs::path(opts.cache_dir) / RepoFolderName(opts.repo), opts.repo,
                          opts.revision);
  }
  return absl::UnimplementedError("selfcond was built without libcurl");
}

#else  // SELFCOND_HAVE_CURL

namespace {

// scheme://host[:port] of a URL, lowercased (what decides whether the token may be sent).
std::string Origin(const std::string& url) {
  const size_t scheme = url.find("://");
  if (scheme == std::string::npos) return "";
  const size_t end = url.find_first_of("/?#", scheme + 3);
  return absl::AsciiStrToLower(url.substr(0, end));
}

// One request's answer and, for a download, where its body goes.
struct Transfer {
  // In.
  int fd = -1;                                // a 2xx body goes here (else into body)
  uint64_t resume_from = 0;                   // bytes already in fd (a Range request)
  uint64_t expected = 0;                      // the file's size; 0 = unknown
  size_t body_cap = 1 << 16;                  // bytes of a non-file body kept
  std::function<void(uint64_t)> on_position;  // bytes of the file now on disk
  // Out.
  long status = 0;
  std::map<std::string, std::string> headers;  // of the last response; lowercase names
  std::string body;
  bool body_truncated = false;
  bool prepared = false;
  bool restarted = false;  // a 200 answer to a Range request: started again from zero
  uint64_t written = 0;    // body bytes written to fd by this request
  std::string error;       // why a callback stopped the transfer
};

size_t OnHeader(char* p, size_t size, size_t n, void* ud) {
  auto* t = static_cast<Transfer*>(ud);
  absl::string_view line(p, size * n);
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
  if (absl::StartsWith(line, "HTTP/")) {  // a new response (after a redirect or a 100)
    t->headers.clear();
    const size_t sp = line.find(' ');
    int code = 0;
    if (sp != absl::string_view::npos && absl::SimpleAtoi(line.substr(sp + 1, 3), &code)) {
      t->status = code;
    }
  } else if (const size_t colon = line.find(':'); colon != absl::string_view::npos) {
    t->headers[absl::AsciiStrToLower(line.substr(0, colon))] =
        std::string(absl::StripAsciiWhitespace(line.substr(colon + 1)));
  }
  return size * n;
}

// The first byte of a 2xx file body: 206 appends at resume_from, 200 starts from zero.
bool Prepare(Transfer* t) {
  t->prepared = true;
  if (t->status == 206) {
    const std::string& cr = t->headers["content-range"];  // bytes START-END/TOTAL
    uint64_t start = 0;
    const size_t sp = cr.find(' '), dash = cr.find('-');
    if (sp == std::string::npos || dash == std::string::npos ||
        !absl::SimpleAtoi(cr.substr(sp + 1, dash - sp - 1), &start) || start != t->resume_from) {
      t->error = absl::StrCat("206 answer with Content-Range '", Printable(cr),
                              "' to a request from byte ", t->resume_from);
      return false;
    }
    return true;
  }
  if (t->resume_from > 0) {
    if (ftruncate(t->fd, 0) != 0 || lseek(t->fd, 0, SEEK_SET) != 0) {
      t->error = absl::StrCat("truncating the partial download: ", std::strerror(errno));
      return false;
    }
    t->resume_from = 0;
    t->restarted = true;
  }
  return true;
}

size_t OnData(char* p, size_t size, size_t n, void* ud) {
  auto* t = static_cast<Transfer*>(ud);
  const size_t len = size * n;
  if (t->fd < 0 || t->status < 200 || t->status >= 300) {
    const size_t keep = std::min(len, t->body_cap - std::min(t->body_cap, t->body.size()));
    t->body.append(p, keep);
    if (keep < len) t->body_truncated = true;
    return len;
  }
  if (!t->prepared && !Prepare(t)) return 0;
  if (t->expected > 0 && t->resume_from + t->written + len > t->expected) {
    t->error = absl::StrCat("the server sent more than the announced ", t->expected, " bytes");
    return 0;
  }
  for (size_t off = 0; off < len;) {
    const ssize_t w = ::write(t->fd, p + off, len - off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      t->error = absl::StrCat("writing the download: ", std::strerror(errno));
      return 0;
    }
    off += static_cast<size_t>(w);
  }
  t->written += len;
  if (t->on_position) t->on_position(t->resume_from + t->written);
  return len;
}

class Client {
 public:
  Client(const PullOptions& o, std::string endpoint)
      : opts_(o), endpoint_(std::move(endpoint)), origin_(Origin(endpoint_)) {
    static const bool init = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
    (void)init;
    h_ = curl_easy_init();
  }
  ~Client() {
    if (h_) curl_easy_cleanup(h_);
  }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  const std::string& endpoint() const { return endpoint_; }
  bool SameHost(const std::string& url) const { return Origin(url) == origin_; }

  // One request. head: HEAD (else GET); follow: follow redirects (curl drops the Authorization
  // header on a redirect to another host); range: "" or "bytes=N-". The token goes only to the
  // hub's own origin. A transport failure is Unavailable (worth a retry); the HTTP status is
  // left to the caller.
  absl::Status Run(const std::string& url, bool head, bool follow, const std::string& range,
                   Transfer* t) {
    if (!h_) return absl::InternalError("curl_easy_init failed");
    curl_easy_reset(h_);
    char err[CURL_ERROR_SIZE] = {0};
    curl_slist* hdrs = nullptr;
    hdrs = curl_slist_append(hdrs, "Accept-Encoding: identity");
    if (!opts_.token.empty() && SameHost(url)) {
      hdrs = curl_slist_append(hdrs, ("Authorization: Bearer " + opts_.token).c_str());
    }
    if (!range.empty()) hdrs = curl_slist_append(hdrs, ("Range: " + range).c_str());
    curl_easy_setopt(h_, CURLOPT_URL, url.c_str());
    curl_easy_setopt(h_, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h_, CURLOPT_USERAGENT, "selfcond-pull/0.11 (huggingface_hub protocol)");
    curl_easy_setopt(h_, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h_, CURLOPT_ERRORBUFFER, err);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(h_, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h_, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#endif
    curl_easy_setopt(h_, CURLOPT_CONNECTTIMEOUT, static_cast<long>(opts_.connect_timeout_s));
    curl_easy_setopt(h_, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(h_, CURLOPT_LOW_SPEED_TIME, static_cast<long>(opts_.stall_timeout_s));
    curl_easy_setopt(h_, CURLOPT_FOLLOWLOCATION, follow ? 1L : 0L);
    curl_easy_setopt(h_, CURLOPT_MAXREDIRS, 10L);
    curl_easy_setopt(h_, CURLOPT_NOBODY, head ? 1L : 0L);
    curl_easy_setopt(h_, CURLOPT_HEADERFUNCTION, OnHeader);
    curl_easy_setopt(h_, CURLOPT_HEADERDATA, t);
    curl_easy_setopt(h_, CURLOPT_WRITEFUNCTION, OnData);
    curl_easy_setopt(h_, CURLOPT_WRITEDATA, t);
    const CURLcode rc = curl_easy_perform(h_);
    curl_slist_free_all(hdrs);
    const char* what = head ? "HEAD " : "GET ";
    if (!t->error.empty()) {
      return absl::DataLossError(absl::StrCat(what, url, ": ", t->error));
    }
    if (rc != CURLE_OK) {
      return absl::UnavailableError(absl::StrCat(what, url, ": ", curl_easy_strerror(rc),
                                                 err[0] ? absl::StrCat(" (", err, ")") : ""));
    }
    if (t->fd >= 0 && t->status >= 200 && t->status < 300 && !t->prepared && !Prepare(t)) {
      return absl::DataLossError(absl::StrCat(what, url, ": ", t->error));
    }
    return absl::OkStatus();
  }

 private:
  const PullOptions& opts_;
  std::string endpoint_, origin_;
  CURL* h_ = nullptr;
};

// An HTTP error status as a message that says what to do.
absl::Status HttpError(const std::string& what, const Transfer& t, const PullOptions& o) {
  std::string msg = absl::StrCat(what, ": HTTP ", t.status);
  auto it = t.headers.find("x-error-message");
  if (it != t.headers.end()) absl::StrAppend(&msg, " (", Printable(it->second, 200), ")");
  const std::string spec = absl::StrCat(o.repo, "@", o.revision);
  const auto code = t.headers.find("x-error-code");
  const std::string error_code = code == t.headers.end() ? "" : code->second;
  if (error_code == "GatedRepo") {
    return absl::PermissionDeniedError(
        absl::StrCat(msg, ": ", o.repo,
                     " is gated: accept its conditions on its page on the hub, and set HF_TOKEN "
                     "to a token of that account"));
  }
  if (t.status == 404 && error_code == "EntryNotFound") {
    return absl::NotFoundError(absl::StrCat(msg, ": file not found in ", spec));
  }
  if (t.status == 401 || t.status == 403) {
    return absl::PermissionDeniedError(absl::StrCat(
        msg, ": ",
        o.token.empty() ? absl::StrCat(spec,
                                       " needs authentication (a private or gated repo, or one "
                                       "that does not exist): set HF_TOKEN to an access token")
                        : absl::StrCat("the token in HF_TOKEN gives no access to ", spec,
                                       " (private or gated repo, or one that does not exist)")));
  }
  if (t.status == 404) {
    return absl::NotFoundError(absl::StrCat(msg, ": repo or revision not found: ", spec));
  }
  if (t.status == 429 || t.status >= 500) {
    return absl::UnavailableError(absl::StrCat(msg, ": the server is busy or failing; try again"));
  }
  return absl::FailedPreconditionError(msg);
}

// What a HEAD on resolve/ says about one file.
struct FileMeta {
  std::string name;
  std::string etag;     // normalized: no W/ and quotes
  bool lfs = false;     // X-Linked-Etag with a sha256: checked after download
  uint64_t size = 0;    // 0 = unknown
  std::string get_url;  // the CDN location for LFS files, else the resolve URL
};

std::string NormalizeEtag(std::string e) {
  if (absl::StartsWith(e, "W/")) e = e.substr(2);
  if (e.size() >= 2 && e.front() == '"' && e.back() == '"') e = e.substr(1, e.size() - 2);
  return e;
}

bool SafeBlobName(const std::string& e) {
  if (e.empty() || e.size() > 128) return false;
  for (unsigned char c : e) {
    if (!absl::ascii_isalnum(c) && c != '-' && c != '_') return false;
  }
  return true;
}

absl::StatusOr<std::string> Sha256OfFile(int fd) {
  if (lseek(fd, 0, SEEK_SET) != 0) return absl::InternalError(std::strerror(errno));
  Sha256 h;
  std::vector<uint8_t> buf(1 << 20);
  for (;;) {
    const ssize_t r = ::read(fd, buf.data(), buf.size());
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return absl::InternalError(absl::StrCat("reading: ", std::strerror(errno)));
    if (r == 0) break;
    h.Update(buf.data(), static_cast<size_t>(r));
  }
  const Sha256::Digest d = h.Final();
  return HexLower(d);
}

class Puller {
 public:
  Puller(const PullOptions& o, std::string endpoint, fs::path repo_dir,
         std::function<void(uint64_t, uint64_t, const std::string&)> progress)
      : o_(o),
        client_(o, std::move(endpoint)),
        repo_dir_(std::move(repo_dir)),
        progress_(std::move(progress)) {}

  absl::StatusOr<std::string> Run();

 private:
  void Note(const std::string& s) {
    if (o_.on_note) o_.on_note(s);
  }
  std::string ResolveUrl(const std::string& file) const {
    return absl::StrCat(client_.endpoint(), "/", o_.repo, "/resolve/", commit_, "/",
                        PercentEncode(file, true));
  }
  absl::Status FetchInfo(std::set<std::string>* siblings);
  absl::StatusOr<FileMeta> Head(const std::string& file);
  absl::Status Download(const FileMeta& m, uint64_t done_before, uint64_t total);
  absl::Status Link(const std::string& file, const std::string& etag);
  fs::path Blob(const std::string& etag) const { return repo_dir_ / "blobs" / etag; }

  const PullOptions& o_;
  Client client_;
  fs::path repo_dir_, snap_;
  std::string commit_;
  std::function<void(uint64_t, uint64_t, const std::string&)> progress_;
};

absl::Status Puller::FetchInfo(std::set<std::string>* siblings) {
  const std::string url = absl::StrCat(client_.endpoint(), "/api/models/", o_.repo, "/revision/",
                                       PercentEncode(o_.revision, false));
  Transfer t;
  t.body_cap = 64 << 20;
  absl::Status st = client_.Run(url, false, true, "", &t);
  if (!st.ok()) return st;
  if (t.status != 200) return HttpError("GET " + url, t, o_);
  if (t.body_truncated) return absl::DataLossError("GET " + url + ": answer over 64 MiB");
  auto doc = json::Parse(t.body);
  if (!doc.ok() || !doc->is_object()) {
    return absl::DataLossError(absl::StrCat("GET ", url, ": not a JSON object",
                                            doc.ok() ? "" : ": " + doc.status().ToString()));
  }
  auto sha = doc->GetString("sha");
  if (!sha.ok() || !IsCommit(*sha)) {
    return absl::DataLossError(
        absl::StrCat("GET ", url, ": no commit sha (\"sha\") in the answer"));
  }
  commit_ = absl::AsciiStrToLower(*sha);
  const json::Value* sib = doc->Find("siblings");
  if (!sib || !sib->is_array()) {
    return absl::DataLossError(absl::StrCat("GET ", url, ": no \"siblings\" file list"));
  }
  for (const json::Value& s : sib->items()) {
    const json::Value* f = s.Find("rfilename");
    if (f && f->is_string()) siblings->insert(std::string(f->as_string()));
  }
  return absl::OkStatus();
}

absl::StatusOr<FileMeta> Puller::Head(const std::string& file) {
  FileMeta m;
  m.name = file;
  std::string url = ResolveUrl(file);
  Transfer t;
  // Relative redirects (a renamed repo) are followed here; a redirect to another host (the CDN
  // of an LFS file) is where the file will be downloaded from.
  for (int hops = 0;; ++hops) {
    t = Transfer();
    absl::Status st = client_.Run(url, true, false, "", &t);
    if (!st.ok()) return st;
    const std::string loc = t.headers["location"];
    if (t.status >= 300 && t.status < 400 && absl::StartsWith(loc, "/") &&
        !absl::StartsWith(loc, "//") && hops < 5) {
      url = Origin(client_.endpoint()) + loc;
      continue;
    }
    break;
  }
  if (t.status >= 400 || t.status < 200) return HttpError("HEAD " + url, t, o_);
  const std::string commit = absl::AsciiStrToLower(t.headers["x-repo-commit"]);
  if (!commit.empty() && commit != commit_) {
    return absl::FailedPreconditionError(absl::StrCat("HEAD ", url, ": X-Repo-Commit ",
                                                      Printable(commit),
                                                      " is not the revision's commit ", commit_));
  }
  const bool linked = t.headers.count("x-linked-etag") > 0;
  m.etag = NormalizeEtag(linked ? t.headers["x-linked-etag"] : t.headers["etag"]);
  if (m.etag.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "HEAD ", url, ": no ETag or X-Linked-Etag header (is HF_ENDPOINT a Hugging Face hub?)"));
  }
  if (!SafeBlobName(m.etag)) {
    return absl::FailedPreconditionError(
        absl::StrCat("HEAD ", url, ": refusing ETag '", Printable(m.etag), "'"));
  }
  m.etag = absl::AsciiStrToLower(m.etag);
  m.lfs = linked && m.etag.size() == 64 && IsHex(m.etag);
  const std::string size_hdr =
      t.headers.count("x-linked-size") ? t.headers["x-linked-size"] : t.headers["content-length"];
  if (!size_hdr.empty() && !absl::SimpleAtoi(size_hdr, &m.size)) {
    return absl::FailedPreconditionError(
        absl::StrCat("HEAD ", url, ": bad size '", Printable(size_hdr), "'"));
  }
  m.get_url = url;
  if (t.status >= 300) {
    const std::string loc = t.headers["location"];
    if (!absl::StartsWith(loc, "http://") && !absl::StartsWith(loc, "https://")) {
      return absl::FailedPreconditionError(
          absl::StrCat("HEAD ", url, ": HTTP ", t.status, " without a usable Location"));
    }
    m.get_url = loc;
  }
  return m;
}

absl::Status Puller::Download(const FileMeta& m, uint64_t done_before, uint64_t total) {
  const std::string blob = Blob(m.etag).string();
  const std::string part = blob + ".incomplete";
  const int fd = ::open(part.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0) return absl::InternalError(absl::StrCat(part, ": ", std::strerror(errno)));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    return absl::UnavailableError(
        absl::StrCat("another selfcond pull is downloading ", m.name, " (", part, ")"));
  }
  auto report = [&](uint64_t pos) {
    if (progress_) progress_(done_before + pos, total, m.name);
  };
  bool restarted = false;  // after a 416 (not counted as a retry)
  for (int attempt = 0;; ++attempt) {
    struct stat sb;
    if (fstat(fd, &sb) != 0) return absl::InternalError(std::strerror(errno));
    uint64_t have = static_cast<uint64_t>(sb.st_size);
    if (m.size > 0 && have > m.size) {
      if (ftruncate(fd, 0) != 0) return absl::InternalError(std::strerror(errno));
      have = 0;
    }
    if (m.size > 0 && have == m.size) break;  // complete (an earlier run died before renaming)
    if (lseek(fd, static_cast<off_t>(have), SEEK_SET) < 0) {
      return absl::InternalError(std::strerror(errno));
    }
    report(have);
    Transfer t;
    t.fd = fd;
    t.resume_from = have;
    t.expected = m.size;
    t.body_cap = 4096;
    t.on_position = report;
    const std::string range = have > 0 ? absl::StrCat("bytes=", have, "-") : "";
    absl::Status st = client_.Run(m.get_url, false, true, range, &t);
    if (st.ok() && t.status == 416 && have > 0) {  // the range is past the end: start again
      if (ftruncate(fd, 0) != 0) return absl::InternalError(std::strerror(errno));
      if (!restarted) {
        restarted = true;
        --attempt;
        continue;
      }
    }
    if (st.ok() && (t.status < 200 || t.status >= 300)) {
      st = HttpError("GET " + m.get_url, t, o_);
      if (!absl::IsUnavailable(st)) return st;
    }
    if (st.ok()) {
      const uint64_t now = t.resume_from + t.written;
      if (m.size == 0 || now == m.size) break;
      st = absl::UnavailableError(absl::StrCat("GET ", m.get_url, ": the transfer ended at ", now,
                                               " of ", m.size, " bytes"));
    }
    if (!absl::IsUnavailable(st)) return st;  // DataLoss: a server that misbehaves, no retry
    if (attempt >= o_.retries) {
      struct stat now;
      const uint64_t kept = fstat(fd, &now) == 0 ? static_cast<uint64_t>(now.st_size) : 0;
      return absl::UnavailableError(absl::StrCat(st.message(), " (", m.name, ": ", kept,
                                                 " bytes kept in ", part,
                                                 "; run the same pull again to resume)"));
    }
    Note(absl::StrCat(st.message(), "; resuming ", m.name, " (retry ", attempt + 1, " of ",
                      o_.retries, ")"));
    std::this_thread::sleep_for(std::chrono::milliseconds(500 << std::min(attempt, 4)));
  }
  struct stat sb;
  if (fstat(fd, &sb) != 0) return absl::InternalError(std::strerror(errno));
  if (m.size > 0 && static_cast<uint64_t>(sb.st_size) != m.size) {
    ::unlink(part.c_str());
    return absl::DataLossError(
        absl::StrCat(m.name, ": downloaded ", sb.st_size, " bytes, the server announced ", m.size));
  }
  if (m.lfs) {
    auto got = Sha256OfFile(fd);
    if (!got.ok()) return got.status();
    if (*got != m.etag) {
      ::unlink(part.c_str());
      return absl::DataLossError(absl::StrCat("sha256 mismatch for ", m.name, " (", m.get_url,
                                              "): expected ", m.etag, " (X-Linked-Etag), got ",
                                              *got, "; the corrupt download was deleted"));
    }
  }
  if (fsync(fd) != 0 || std::rename(part.c_str(), blob.c_str()) != 0) {
    return absl::InternalError(absl::StrCat(blob, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

// snapshots/<commit>/<file> -> ../../blobs/<etag> (one more ../ per directory of file).
absl::Status Puller::Link(const std::string& file, const std::string& etag) {
  const fs::path link = snap_ / file;
  std::error_code ec;
  fs::create_directories(link.parent_path(), ec);
  if (ec) return absl::InternalError(absl::StrCat(link.parent_path().string(), ": ", ec.message()));
  std::string target = "../../";
  for (char c : file) {
    if (c == '/') target += "../";
  }
  target += "blobs/" + etag;
  const std::string tmp = link.string() + ".selfcond-link";
  ::unlink(tmp.c_str());
  if (::symlink(target.c_str(), tmp.c_str()) != 0 ||
      std::rename(tmp.c_str(), link.string().c_str()) != 0) {
    return absl::InternalError(absl::StrCat(link.string(), ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> Puller::Run() {
  std::set<std::string> siblings;
  absl::Status st = FetchInfo(&siblings);
  if (!st.ok()) {
    if (absl::IsUnavailable(st)) {  // no network: a complete cached snapshot will do
      auto cached = CachedSnapshot(repo_dir_, o_.repo, o_.revision);
      if (cached.ok()) {
        Note(absl::StrCat(st.message(), "; offline: using the cached snapshot ", *cached));
        return cached;
      }
    }
    return st;
  }
  snap_ = repo_dir_ / "snapshots" / commit_;
  std::error_code ec;
  fs::create_directories(repo_dir_ / "blobs", ec);
  if (!ec) fs::create_directories(snap_, ec);
  if (ec) return absl::InternalError(absl::StrCat(repo_dir_.string(), ": ", ec.message()));
  const std::string what = absl::StrCat(o_.repo, "@", o_.revision);
  auto sel = SelectFiles(siblings, what);
  if (!sel.ok()) return sel.status();
  std::vector<std::string> files = sel->files;

  // Every file not yet in the snapshot: HEAD (etag, size, location); a blob already in the
  // cache (another revision with the same file) is linked, the rest downloaded. The index of
  // sharded weights first: it names the shards.
  std::vector<FileMeta> todo;
  auto plan = [&](const std::string& f) -> absl::Status {
    if (IsRegularFile(snap_ / f)) return absl::OkStatus();
    auto m = Head(f);
    if (!m.ok()) return m.status();
    const fs::path blob = Blob(m->etag);
    std::error_code ec2;
    if (IsRegularFile(blob) && (m->size == 0 || fs::file_size(blob, ec2) == m->size)) {
      return Link(f, m->etag);
    }
    todo.push_back(*m);
    return absl::OkStatus();
  };
  auto fetch_all = [&]() -> absl::Status {
    uint64_t total = 0, done = 0;
    for (const FileMeta& m : todo) total += m.size;
    for (const FileMeta& m : todo) {
      absl::Status s = Download(m, done, total);
      if (!s.ok()) return s;
      s = Link(m.name, m.etag);
      if (!s.ok()) return s;
      done += m.size;
      if (progress_) progress_(done, total, m.name);
    }
    todo.clear();
    return absl::OkStatus();
  };
  if (!sel->index.empty()) {
    st = plan(sel->index);
    if (st.ok()) st = fetch_all();
    if (!st.ok()) return st;
    auto shards = ShardsOfIndex((snap_ / sel->index).string(), sel->index);
    if (!shards.ok()) return shards.status();
    for (const std::string& s : *shards) {
      if (!siblings.count(s)) {
        return absl::NotFoundError(
            absl::StrCat(sel->index, " names the shard ", s, " which ", what, " does not have"));
      }
      files.push_back(s);
    }
  }
  for (const std::string& f : files) {
    if (f == sel->index) continue;
    st = ValidateRepoFileName(f);
    if (st.ok()) st = plan(f);
    if (!st.ok()) return st;
  }
  st = fetch_all();
  if (!st.ok()) return st;
  if (o_.revision != commit_) {  // refs/<revision> -> the commit, for offline use
    const fs::path ref = repo_dir_ / "refs" / o_.revision;
    fs::create_directories(ref.parent_path(), ec);
    if (!ec) st = WriteFile(ref.string(), commit_);
    if (ec || !st.ok()) Note(absl::StrCat("could not write ", ref.string()));
  }
  return snap_.string();
}

}  // namespace

absl::StatusOr<std::string> PullSnapshot(
    const PullOptions& opts,
    std::function<void(uint64_t done, uint64_t total, const std::string& file)> progress) {
  absl::Status st = ValidateRepoId(opts.repo);
  if (st.ok()) st = ValidateRevision(opts.revision);
  if (!st.ok()) return st;
  const std::string cache = opts.cache_dir.empty() ? DefaultPullCacheDir() : opts.cache_dir;
  if (cache.empty()) {
    return absl::FailedPreconditionError(
        "no cache directory: set SELFCOND_CACHE (or XDG_CACHE_HOME or HOME)");
  }
  const fs::path repo_dir = fs::path(cache) / RepoFolderName(opts.repo);
  if (opts.offline) {
    auto cached = CachedSnapshot(repo_dir, opts.repo, opts.revision);
    if (!cached.ok()) {
      return absl::NotFoundError(
          absl::StrCat("offline (HF_HUB_OFFLINE): ", cached.status().message()));
    }
    return cached;
  }
  std::string endpoint = opts.endpoint.empty() ? "https://huggingface.co" : opts.endpoint;
  while (absl::EndsWith(endpoint, "/")) endpoint.pop_back();
  if (!absl::StartsWith(endpoint, "http://") && !absl::StartsWith(endpoint, "https://")) {
    return absl::InvalidArgumentError(
        absl::StrCat("HF_ENDPOINT '", Printable(endpoint), "' is not an http(s) URL"));
  }
  if (!LoadCurl().ok()) return LoadCurl().status();
  Puller p(opts, endpoint, repo_dir, std::move(progress));
  return p.Run();
}

#endif  // SELFCOND_HAVE_CURL

}  // namespace selfcond
