// llama.cpp as the independent reference for the Llama family's forward pass: runs prompts
// (token ids) through a GGUF model with llama.cpp's C API, all in float32 (F32 weights, F32 KV
// cache, flash attention off, one thread), and writes every prompt position's logits plus a
// greedy continuation. Built by tests/llama_reference.sh against the prebuilt llama.cpp of npm
// @node-llama-cpp/linux-x64 (headers from the same commit); not part of selfcond.
//
//   llama_logits MODEL.gguf PROMPTS.json OUT_PREFIX
// PROMPTS.json: {"prompts": [[ids...], ...], "n_gen": N, "keep": K}. Keeps the K prompts whose
// greedy choices have the widest smallest top-2 margin (in their original order) and writes
// OUT_PREFIX.json ({"vocab": V, "cases": [{"prompt": [...], "greedy": [...], "min_margin": m}]})
// and OUT_PREFIX.f32 (for each kept case, len(prompt) x V float32 logits, row-major).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "ggml-backend.h"
#include "llama.h"

namespace {

// The numbers of a JSON array of arrays of integers, read without a JSON library: each inner
// "[...]" is one prompt.
int ReadInt(const std::string& text, const char* key, int dflt) {
  const size_t at = text.find(key);
  return at == std::string::npos ? dflt : std::atoi(text.c_str() + text.find(':', at) + 1);
}

std::vector<std::vector<llama_token>> ReadPrompts(const std::string& text) {
  std::vector<std::vector<llama_token>> out;
  const size_t at = text.find("\"prompts\"");
  size_t i = text.find('[', at);
  int depth = 0;
  std::vector<llama_token> cur;
  std::string num;
  for (; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '[') {
      ++depth;
      cur.clear();
    } else if (c >= '0' && c <= '9') {
      num += c;
    } else {
      if (!num.empty()) cur.push_back(std::atoi(num.c_str()));
      num.clear();
      if (c == ']') {
        if (depth == 2) out.push_back(cur);
        if (--depth == 0) break;
      }
    }
  }
  return out;
}

void Quiet(ggml_log_level level, const char* text, void*) {
  if (level >= GGML_LOG_LEVEL_ERROR) std::fputs(text, stderr);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s MODEL.gguf PROMPTS.json OUT_PREFIX\n", argv[0]);
    return 2;
  }
  std::ifstream pf(argv[2]);
  std::stringstream ss;
  ss << pf.rdbuf();
  const int n_gen = ReadInt(ss.str(), "\"n_gen\"", 8);
  const auto prompts = ReadPrompts(ss.str());
  const size_t keep = std::min<size_t>(prompts.size(), ReadInt(ss.str(), "\"keep\"", 1 << 30));
  if (prompts.empty()) {
    std::fprintf(stderr, "no prompts in %s\n", argv[2]);
    return 1;
  }
  llama_log_set(Quiet, nullptr);
  const char* bins = std::getenv("NLC_BINS");
  ggml_backend_load_all_from_path(bins != nullptr ? bins : ".");
  llama_backend_init();
  llama_model_params mp = llama_model_default_params();
  mp.n_gpu_layers = 0;
  mp.progress_callback = [](float, void*) { return true; };  // no progress dots
  llama_model* model = llama_model_load_from_file(argv[1], mp);
  if (model == nullptr) {
    std::fprintf(stderr, "llama.cpp could not load %s\n", argv[1]);
    return 1;
  }
  const int V = llama_vocab_n_tokens(llama_model_get_vocab(model));
  struct Case {
    std::vector<float> logits;  // (prompt, V)
    std::string json;
    float min_margin;
  };
  std::vector<Case> cases;
  for (size_t c = 0; c < prompts.size(); ++c) {
    const std::vector<llama_token>& prompt = prompts[c];
    const int n = static_cast<int>(prompt.size());
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = n + n_gen + 8;
    cp.n_batch = cp.n_ubatch = n;
    cp.n_seq_max = 1;
    cp.n_threads = cp.n_threads_batch = 1;
    cp.type_k = cp.type_v = GGML_TYPE_F32;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.no_perf = true;
    llama_context* ctx = llama_init_from_model(model, cp);
    if (ctx == nullptr) {
      std::fprintf(stderr, "llama.cpp could not create a context\n");
      return 1;
    }
    llama_batch batch = llama_batch_init(n, 0, 1);
    for (int i = 0; i < n; ++i) {
      batch.token[i] = prompt[i];
      batch.pos[i] = i;
      batch.n_seq_id[i] = 1;
      batch.seq_id[i][0] = 0;
      batch.logits[i] = 1;
    }
    batch.n_tokens = n;
    if (llama_decode(ctx, batch) != 0) {
      std::fprintf(stderr, "llama_decode failed\n");
      return 1;
    }
    float min_margin = 1e30f;
    auto margin = [&](const float* l) {
      std::vector<float> v(l, l + V);
      std::partial_sort(v.begin(), v.begin() + 2, v.end(), std::greater<float>());
      min_margin = std::min(min_margin, v[0] - v[1]);
    };
    Case out;
    for (int i = 0; i < n; ++i) {
      const float* l = llama_get_logits_ith(ctx, i);
      out.logits.insert(out.logits.end(), l, l + V);
    }
    std::vector<llama_token> greedy;
    const float* last = llama_get_logits_ith(ctx, n - 1);
    for (int g = 0; g < n_gen; ++g) {
      margin(last);
      llama_token next = static_cast<llama_token>(std::max_element(last, last + V) - last);
      greedy.push_back(next);
      llama_batch one = llama_batch_get_one(&next, 1);
      if (llama_decode(ctx, one) != 0) {
        std::fprintf(stderr, "llama_decode failed\n");
        return 1;
      }
      last = llama_get_logits_ith(ctx, -1);
    }
    llama_batch_free(batch);
    llama_free(ctx);
    out.json = "{\"prompt\": [";
    for (int i = 0; i < n; ++i) out.json += (i ? "," : "") + std::to_string(prompt[i]);
    out.json += "], \"greedy\": [";
    for (size_t i = 0; i < greedy.size(); ++i) {
      out.json += (i ? "," : "") + std::to_string(greedy[i]);
    }
    out.json += "], \"min_margin\": " + std::to_string(min_margin) + "}";
    out.min_margin = min_margin;
    cases.push_back(std::move(out));
  }
  // The `keep` cases with the widest margins, in their original order.
  std::vector<size_t> order(cases.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return cases[a].min_margin > cases[b].min_margin; });
  order.resize(keep);
  std::sort(order.begin(), order.end());
  FILE* bin = std::fopen((std::string(argv[3]) + ".f32").c_str(), "wb");
  std::string json = "{\"vocab\": " + std::to_string(V) + ", \"cases\": [";
  for (size_t k = 0; k < order.size(); ++k) {
    const Case& c = cases[order[k]];
    std::fwrite(c.logits.data(), sizeof(float), c.logits.size(), bin);
    json += (k ? ", " : "") + c.json;
  }
  json += "]}\n";
  std::fclose(bin);
  std::ofstream(std::string(argv[3]) + ".json") << json;
  llama_model_free(model);
  llama_backend_free();
  return 0;
}
