/* tools/examples/example.c — embedding libmoe from C: load a model with a progress callback,
 * generate a continuation of a prompt token by token, print the statistics.
 *   moe_example_c MODEL [PROMPT] [N]
 * Exit status 0 on success, 1 on any failure (the message comes from moe_last_error()). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <moe/moe.h>

static bool on_progress(float p, void* user_data) {
  int* calls = (int*)user_data;
  ++*calls;
  (void)p;
  return true;
}

static bool on_token(const char* text, size_t len, int32_t token, void* user_data) {
  int* n = (int*)user_data;
  if (token >= 0) ++*n;
  fwrite(text, 1, len, stdout);
  fflush(stdout);
  return true;
}

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s MODEL [PROMPT] [N]\n", argv[0]);
    return 2;
  }
  const char* prompt = argc > 2 ? argv[2] : "Once upon a time";
  const int n_predict = argc > 3 ? atoi(argv[3]) : 16;

  moe_model_params mp = moe_model_default_params();
  mp.n_ctx = 256;
  int progress_calls = 0;
  moe_model* model = NULL;
  moe_status st = moe_model_load(argv[1], &mp, on_progress, &progress_calls, &model);
  if (st != MOE_STATUS_OK) {
    fprintf(stderr, "load failed (%s): %s\n", moe_status_string(st), moe_last_error());
    return 1;
  }
  moe_model_info info;
  moe_model_get_info(model, &info);
  printf("model: %s, %u layers, %u experts (top-%u), vocab %u\n", info.architecture, info.n_layer,
         info.n_expert, info.n_expert_used, info.n_vocab);

  moe_session_params sp = moe_session_default_params();
  sp.sampling.temperature = 0.0f; /* greedy */
  moe_session* session = NULL;
  st = moe_session_new(model, &sp, &session);
  if (st != MOE_STATUS_OK) {
    fprintf(stderr, "session failed (%s): %s\n", moe_status_string(st), moe_last_error());
    moe_model_free(model);
    return 1;
  }
  moe_generate_params gp = moe_generate_default_params();
  gp.n_predict = n_predict;
  gp.ignore_eog = true;
  int generated = 0;
  printf("%s", prompt);
  st = moe_session_generate(session, prompt, &gp, on_token, &generated);
  printf("\n");
  int rc = 0;
  if (st != MOE_STATUS_OK) {
    fprintf(stderr, "generate failed (%s): %s\n", moe_status_string(st), moe_last_error());
    rc = 1;
  }
  moe_session_stats stats;
  moe_session_get_stats(session, &stats);
  printf("generated %d tokens (stats: %llu), prefill %.1f tok/s, decode %.1f tok/s, progress calls %d\n",
         generated, (unsigned long long)stats.generated_tokens, stats.prefill_tok_s, stats.decode_tok_s,
         progress_calls);
  if (generated != n_predict || (int)stats.generated_tokens != n_predict || progress_calls < 2) rc = 1;
  moe_session_free(session);
  moe_model_free(model);
  return rc;
}
