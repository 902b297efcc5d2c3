/* selfcond from C: load a model, rank a small concept, generate text conditioned on it.
 * Built against the installed package only (demo/c/CMakeLists.txt or pkg-config):
 *   demo_c MODEL.scm [EXPERTS.json|-] [PROMPT]
 * It ranks a hand-typed 6+6 sentence concept (the API a user-defined concept goes through),
 * then generates with the top 50 experts of EXPERTS.json (a table ranked on a real dataset,
 * e.g. demo/experts/football.json) or, without it, of the small ranking just made.
 */
#include <selfcond/selfcond.h>
#include <stdio.h>
#include <string.h>

static int print_piece(int32_t token, const char* piece, size_t len, void* user) {
  (void)token;
  (void)user;
  fwrite(piece, 1, len, stdout);
  fflush(stdout);
  return 1; /* continue */
}

static int show_progress(int done, int total, void* user) {
  (void)user;
  fprintf(stderr, "\rranking: %d/%d sentences", done, total);
  if (done == total) fputc('\n', stderr);
  return 1;
}

static int fail(const char* what, selfcond_status st) {
  fprintf(stderr, "error: %s: %s (%s)\n", what, selfcond_last_error(), selfcond_status_name(st));
  return 1;
}

int main(int argc, char** argv) {
  if (argc < 2 || strcmp(argv[1], "--help") == 0) {
    fprintf(stderr, "usage: %s MODEL.scm [EXPERTS.json|-] [PROMPT]\n", argv[0]);
    return argc < 2 ? 2 : 0;
  }
  const char* table_path = argc > 2 && strcmp(argv[2], "-") != 0 ? argv[2] : NULL;
  const char* prompt = argc > 3 ? argv[3] : "Once upon a time";
  printf("selfcond %s\n", selfcond_version());

  selfcond_model* model = NULL;
  selfcond_status st = selfcond_model_load_file(argv[1], NULL, &model);
  if (st != SELFCOND_OK) return fail("loading the model", st);
  selfcond_model_info info;
  selfcond_model_get_info(model, &info);
  printf("model %s: %d layers, d=%d, context %d, %lld units\n", info.name, info.n_layer,
         info.n_embd, info.n_ctx, (long long)info.num_units);

  /* A tiny concept, typed by hand: sentences about football and sentences that are not. */
  const char* positive[] = {
      "The striker scored a goal in the last minute of the football match.",
      "Fans cheered as the team won the football league.",
      "The goalkeeper saved a penalty kick.",
      "He plays football every Saturday with his club.",
      "The referee showed a red card to the defender.",
      "The football season starts in August.",
  };
  const char* negative[] = {
      "She baked a chocolate cake for the party.",
      "The river flows through the old town.",
      "He reads a book before going to sleep.",
      "The scientist measured the temperature of the sample.",
      "They painted the kitchen walls blue.",
      "The train to the city leaves at nine.",
  };
  selfcond_rank_params rp = selfcond_rank_default_params();
  rp.threads = 0; /* the model's thread pool (all cores by default) */
  selfcond_experts* experts = NULL;
  st = selfcond_rank(model, "football", positive, sizeof positive / sizeof *positive, negative,
                     sizeof negative / sizeof *negative, &rp, show_progress, NULL, &experts);
  if (st != SELFCOND_OK) return fail("ranking", st);
  printf("best experts for 'football':\n");
  for (int i = 0; i < 3; ++i) {
    selfcond_expert_unit u;
    selfcond_experts_get_unit(experts, i, &u);
    char* layer = NULL;
    int unit = 0;
    selfcond_unit_to_string(model, u.unit_id, &layer, &unit);
    printf("  %-28s unit %5d  AP %.3f  on_p50 %+.3f\n", layer, unit, u.ap, u.on_p50);
    selfcond_string_free(layer);
  }

  selfcond_session* session = NULL;
  st = selfcond_session_create(model, NULL, &session);
  if (st != SELFCOND_OK) return fail("creating a session", st);
  selfcond_generate_params gp = selfcond_generate_default_params();
  gp.max_new_tokens = 30;
  gp.seed = 1;
  gp.top_p = 0.9f;

  printf("\n== unconditioned\n%s", prompt);
  st = selfcond_generate(session, prompt, &gp, print_piece, NULL, NULL);
  if (st != SELFCOND_OK) return fail("generating", st);

  selfcond_experts* table = experts;
  if (table_path != NULL) {
    /* Checked against the model: a table ranked on another model is refused. */
    st = selfcond_experts_load_file(model, table_path, &table);
    if (st != SELFCOND_OK) return fail("loading the expert table", st);
  }
  selfcond_experts_info tinfo;
  selfcond_experts_get_info(table, &tinfo);
  selfcond_forcing_source src = {table, 50};
  st = selfcond_session_set_forcing(session, &src, 1, SELFCOND_FORCE_ON_P50, 0);
  if (st != SELFCOND_OK) return fail("forcing", st);
  printf("\n\n== top 50 '%s' experts (%d+%d sentences) forced to on_p50, same seed\n%s",
         tinfo.concept, tinfo.num_positive, tinfo.num_negative, prompt);
  if (table != experts) selfcond_experts_free(table); /* the session keeps what it forces */
  selfcond_generate_result res;
  st = selfcond_generate(session, prompt, &gp, print_piece, NULL, &res);
  if (st != SELFCOND_OK) return fail("generating", st);
  printf("\n(%d prompt tokens, %d new)\n", res.prompt_tokens, res.new_tokens);

  selfcond_session_free(session);
  selfcond_experts_free(experts);
  selfcond_model_free(model);
  return 0;
}
