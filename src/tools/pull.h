// Downloading a model from the Hugging Face hub (`selfcond pull`), the way huggingface_hub's
// snapshot_download / hf_hub_download do, over libcurl:
//   - the file list and the commit: GET {endpoint}/api/models/{repo}/revision/{rev} ("sha",
//     "siblings": [{"rfilename"}]); then only what the converter reads is fetched: config.json,
//     the weights (model.safetensors, or model.safetensors.index.json and its shards; else
//     pytorch_model.bin or its index and shards; never tf / flax / onnx / gguf) and the tokenizer
//     files (vocab.json, merges.txt, tokenizer.json, tokenizer_config.json,
//     special_tokens_map.json, generation_config.json) the repo has;
//   - per file, HEAD {endpoint}/{repo}/resolve/{commit}/{file} without following redirects to
//     another host: X-Repo-Commit, X-Linked-Etag (LFS: the sha256) or ETag (a git sha1),
//     X-Linked-Size or Content-Length, and for LFS files a Location (a CDN) that is then
//     downloaded. The token (Authorization: Bearer) is sent to the hub's host only, never to a
//     redirect target on another host (what huggingface_hub does);
//   - downloads go to blobs/<etag>.incomplete and resume from its size with `Range: bytes=N-`
//     (a 200 answer restarts from zero; a 416 on a full-size file is taken as complete). A
//     transfer that breaks midway (connection dropped, stalled) is resumed at once up to
//     PullOptions::retries times (huggingface_hub's http_get does the same); if it still fails
//     the .incomplete file stays and the next pull resumes it;
//   - every LFS file is checked against the sha256 of its X-Linked-Etag, every file against the
//     announced size; a mismatch deletes the .incomplete file and is an error naming the file
//     and both hashes.
//
// Cache: huggingface_hub's layout, under PullOptions::cache_dir (SELFCOND_CACHE, else
// $XDG_CACHE_HOME/selfcond, else ~/.cache/selfcond):
//   models--<owner>--<name>/blobs/<etag>              the files' contents
//   models--<owner>--<name>/snapshots/<commit>/<file>  relative symlinks to the blobs
//   models--<owner>--<name>/refs/<revision>           the commit a branch / tag resolved to
// A second pull of a cached commit downloads nothing (one small API call finds the commit and
// the file list; every file already in the snapshot is used as is). Without a network
// (HF_HUB_OFFLINE=1, or the hub unreachable) a revision found in refs/ (or a commit sha) whose
// snapshot holds every file the converter needs is used offline.
//
// Names from the server (file names, etags, commits) are checked before they become paths: a
// hostile server cannot write outside the cache.
#ifndef SELFCOND_TOOLS_PULL_H_
#define SELFCOND_TOOLS_PULL_H_

#include <cstdint>
#include <functional>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace selfcond {

struct PullOptions {
  std::string repo;               // "owner/name" or "name"
  std::string revision = "main";  // branch, tag or commit sha
  std::string endpoint;           // "" = https://huggingface.co
  std::string token;              // "" = anonymous
  std::string cache_dir;          // "" = DefaultPullCacheDir()
  bool offline = false;           // use the cache only (HF_HUB_OFFLINE=1)
  int retries = 3;                // resumes of a transfer that breaks midway, per file
  int connect_timeout_s = 10;     // connecting to a server
  int stall_timeout_s = 30;       // a transfer under 1 byte/s for this long fails
  // Notes for the user (e.g. "offline: using the cached snapshot"); may be empty.
  std::function<void(const std::string&)> on_note;
};

// HF_ENDPOINT, HF_TOKEN (else HUGGING_FACE_HUB_TOKEN), HF_HUB_OFFLINE and the cache directory
// from the environment; repo and revision are left to the caller.
PullOptions PullOptionsFromEnv();
// $SELFCOND_CACHE, else $XDG_CACHE_HOME/selfcond, else $HOME/.cache/selfcond.
std::string DefaultPullCacheDir();

// "owner/name@rev" -> {"owner/name", "rev"} (revision "main" when absent); checks the repo id.
absl::StatusOr<std::pair<std::string, std::string>> ParseRepoSpec(const std::string& spec);
// A Hugging Face repo id: "name" or "owner/name", each part of [A-Za-z0-9_.-] starting and ending
// with a letter, digit or '_', no "--" or "..", at most 96 characters (huggingface_hub's
// validate_repo_id).
absl::Status ValidateRepoId(const std::string& repo);
// A file name from the server: relative, '/'-separated, no empty, "." or ".." components, no
// backslash or control characters.
absl::Status ValidateRepoFileName(const std::string& name);

// Downloads (or finds in the cache) the files of opts.repo at opts.revision that the converter
// needs and returns the snapshot directory (ConvertCheckpoint's hf_dir). progress (may be empty)
// receives the bytes downloaded so far, the total to download (0 when everything is cached) and
// the file being downloaded. Errors name the URL or file, the HTTP status and what to do (401 /
// 403: set HF_TOKEN; 404: repo or revision not found). Without libcurl: Unimplemented.
absl::StatusOr<std::string> PullSnapshot(
    const PullOptions& opts,
    std::function<void(uint64_t done, uint64_t total, const std::string& file)> progress);

}  // namespace selfcond

#endif  // SELFCOND_TOOLS_PULL_H_
