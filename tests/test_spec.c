/* The JSON network spec: defaults, every rejection naming its key, round
 * trips, and truncated input. No device needed. */
#include "testutil.h"
#include "model/model.h"

static dynb_status parse(const char *text, dynb__net_spec *s, char *err, size_t n) {
  return dynb__spec_parse(text, strlen(text), "spec.json", s, err, n);
}

static const char *example =
    "{\"input\": {\"channels\": 1, \"height\": 28, \"width\": 28}, \"classes\": 10,"
    " \"open\":   {\"width\": 16, \"norm\": \"batch\"},"
    " \"blocks\": [{\"width\": 16, \"layer\": \"doublesym\", \"norm\": \"tv\", \"scheme\": \"rk4\","
    "             \"t_states\": [0,1,2,3,4], \"t_controls\": [0,1,2,3,4]},"
    "            {\"width\": 32, \"layer\": \"doublesym\", \"norm\": \"tv\", \"scheme\": \"rk4\","
    "             \"t_states\": [0,1,2,3,4], \"t_controls\": [0,1,2,3,4]}],"
    " \"head_width\": 32}";

static void spec_example_parses_with_defaults(void **state) {
  (void)state;
  static dynb__net_spec s;
  char err[512];
  assert_int_equal(parse(example, &s, err, sizeof err), DYNB_OK);
  assert_int_equal(s.in_channels, 1);
  assert_int_equal(s.nblocks, 2);
  assert_int_equal(s.open_kernel, 3);
  assert_int_equal(s.open_act, DYNB_ACT_RELU);
  assert_int_equal(s.connect_norm, DYNB_NORM_BATCH);
  assert_int_equal(s.blocks[1].layer.channels, 32);
  assert_int_equal(s.blocks[0].layer.act, DYNB_ACT_RELU);
  assert_int_equal(s.blocks[0].tableau.stages, 4);
  assert_int_equal(s.blocks[0].nstates, 5);
  assert_true(s.blocks[0].t_controls[4] == 4);
  assert_int_equal(s.head_width, 32);
  assert_false(s.clip);
}

/* Each case: a spec text and a fragment the message must contain. */
typedef struct bad_case {
  const char *text, *needle;
} bad_case;

#define BLK "{\"width\": 4, \"layer\": \"doublesym\", \"norm\": \"tv\", \"scheme\": \"euler\", \"t_states\": [0,1]"
#define HEAD "{\"input\": {\"channels\": 1, \"height\": 8, \"width\": 8}, \"classes\": 3, \"open\": {\"width\": 4}, "

static void bad_specs_name_their_key(void **state) {
  (void)state;
  static const bad_case cases[] = {
      {"{", "invalid JSON at line 1"},
      {"[1,2]", "must be an object"},
      {HEAD "\"blocks\": [" BLK "}], \"colour\": 1}", "colour: unknown key"},
      {HEAD "\"blocks\": [" BLK ", \"widht\": 3}]}", "blocks[0].widht: unknown key"},
      {HEAD "\"blocks\": [" BLK ", \"norm\": \"tv\"}]}", "blocks[0].norm: key appears twice"},
      {HEAD "\"blocks\": [" BLK "}], \"head_width\": 2.5}", "head_width: must be an integer"},
      {HEAD "\"blocks\": []}", "blocks: must be an array of 1.."},
      {"{\"input\": {\"channels\": 0, \"height\": 8, \"width\": 8}, \"classes\": 3, \"open\": {\"width\": 4}, \"blocks\": [" BLK "}]}", "input.channels: must be an integer in 1.."},
      {"{\"input\": {\"channels\": 1, \"height\": 8, \"width\": 8}, \"classes\": 1, \"open\": {\"width\": 4}, \"blocks\": [" BLK "}]}", "classes: must be an integer in 2.."},
      {HEAD "\"blocks\": [{\"width\": 4, \"layer\": \"triple\", \"norm\": \"tv\", \"scheme\": \"euler\", \"t_states\": [0,1]}]}", "blocks[0].layer: unknown value 'triple'"},
      {HEAD "\"blocks\": [{\"width\": 4, \"layer\": \"double\", \"norm\": \"group\", \"scheme\": \"euler\", \"t_states\": [0,1]}]}", "blocks[0].norm: unknown value"},
      {HEAD "\"blocks\": [{\"width\": 4, \"layer\": \"double\", \"norm\": \"tv\", \"scheme\": \"rk5\", \"t_states\": [0,1]}]}", "blocks[0].scheme: unknown scheme 'rk5'"},
      {HEAD "\"blocks\": [{\"width\": 4, \"layer\": \"double\", \"norm\": \"tv\", \"scheme\": \"euler\", \"t_states\": [0,1,1]}]}", "blocks[0].t_states: must be strictly increasing"},
      {HEAD "\"blocks\": [{\"width\": 4, \"layer\": \"double\", \"norm\": \"tv\", \"scheme\": \"euler\", \"t_states\": [0]}]}", "blocks[0].t_states: must have 2.."},
      {HEAD "\"blocks\": [" BLK ", \"t_controls\": []}]}", "blocks[0].t_controls: must have 1.."},
      {HEAD "\"blocks\": [" BLK ", \"kernel\": 2}]}", "blocks[0].kernel: must be odd"},
      {HEAD "\"blocks\": [" BLK ", \"act\": \"gelu\"}]}", "blocks[0].act: unknown value 'gelu'"},
      {HEAD "\"blocks\": [{\"width\": 4, \"layer\": \"double\", \"norm\": \"tv\", \"t_states\": [0,1]}]}", "blocks[0].scheme: missing"},
      {HEAD "\"blocks\": [{\"width\": 4, \"layer\": \"double\", \"norm\": \"tv\", \"scheme\": {\"c\": [0, 1], \"A\": [[0, 1], [1, 0]], \"b\": [0.5, 0.5]}, \"t_states\": [0,1]}]}", "blocks[0].scheme: A[0][1] = 1 is on or above the diagonal"},
      {HEAD "\"blocks\": [{\"width\": 4, \"layer\": \"double\", \"norm\": \"tv\", \"scheme\": {\"c\": [0, 1], \"A\": [[0, 0], [1, 0]], \"b\": [1]}, \"t_states\": [0,1]}]}", "blocks[0].scheme: b has 1 entries for 2 stages"},
      {HEAD "\"blocks\": [{\"width\": 4, \"layer\": \"double\", \"norm\": \"tv\", \"scheme\": {\"c\": [0], \"A\": [[0]], \"b\": [1], \"d\": 1}, \"t_states\": [0,1]}]}", "blocks[0].scheme.d: unknown key"},
      {HEAD "\"blocks\": [{\"width\": 5, \"layer\": \"double\", \"norm\": \"tv\", \"scheme\": \"euler\", \"t_states\": [0,1]}]}", "open.width: is 4 but blocks[0].width is 5"},
      {HEAD "\"blocks\": [" BLK "}], \"time_reg\": -1}", "time_reg: must be a number >= 0"},
      {HEAD "\"blocks\": [" BLK "}], \"clip\": {\"min\": 1, \"max\": 0}}", "clip: needs finite numbers min < max"},
      {"{\"input\": {\"channels\": 1, \"height\": 2, \"width\": 2}, \"classes\": 3, \"open\": {\"width\": 4}, \"blocks\": [" BLK "}, " BLK "}, " BLK "}]}", "blocks[2]: the input is 1x1"},
      {HEAD "\"blocks\": [" BLK "}]} trailing", "unexpected text after the JSON object"},
  };
  static dynb__net_spec s;
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    char err[512] = "";
    dynb_status st = parse(cases[i].text, &s, err, sizeof err);
    if (st != DYNB_STATUS_SPEC_ERROR) fail_msg("case %zu accepted: %s", i, cases[i].text);
    if (!strstr(err, cases[i].needle) || strncmp(err, "spec.json: ", 11) != 0)
      fail_msg("case %zu: message '%s' lacks '%s'", i, err, cases[i].needle);
  }
}

static void round_trip_is_exact(void **state) {
  (void)state;
  static dynb__net_spec a, b;
  char err[512];
  const char *custom =
      HEAD "\"blocks\": [{\"width\": 4, \"layer\": \"preact\", \"norm\": \"batch\", \"act\": \"tanh\","
      " \"scheme\": {\"c\": [0, 0.1, 0.7], \"A\": [[0,0,0],[0.1,0,0],[0.3333333333333333,0.36666666666666664,0]],"
      " \"b\": [0.2, 0.3, 0.5]}, \"t_states\": [0, 0.1, 0.30000000000000004, 1], \"t_controls\": [0.5]}],"
      " \"time_reg\": 0.001, \"clip\": {\"min\": -2, \"max\": 3}}";
  const char *texts[2] = {example, custom};
  for (int k = 0; k < 2; k++) {
    assert_int_equal(parse(texts[k], &a, err, sizeof err), DYNB_OK);
    char *json = dynb__spec_to_json(&a);
    assert_non_null(json);
    if (dynb__spec_parse(json, strlen(json), "round-trip", &b, err, sizeof err) != DYNB_OK)
      fail_msg("%s", err);
    assert_memory_equal(&a, &b, sizeof a);
    free(json);
  }
}

static void truncated_specs_fail_cleanly(void **state) {
  (void)state;
  static dynb__net_spec s;
  char err[512];
  size_t n = strlen(example);
  for (size_t len = 0; len < n; len++)
    assert_int_equal(dynb__spec_parse(example, len, "cut.json", &s, err, sizeof err),
                     DYNB_STATUS_SPEC_ERROR);
}

static void shipped_specs_parse(void **state) {
  (void)state;
  /* specs/ beside tests/, found from this file's absolute path. */
  char dir[4096];
  snprintf(dir, sizeof dir, "%s", __FILE__);
  char *slash = strrchr(dir, '/');
  assert_non_null(slash);
  *slash = 0;
  const char *files[] = {"reference.json", "small.json", "custom-scheme.json"};
  static dynb__net_spec s;
  for (size_t i = 0; i < 3; i++) {
    char path[4200], text[8192], err[512];
    snprintf(path, sizeof path, "%s/../specs/%s", dir, files[i]);
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("cannot open %s", path);
    size_t n = fread(text, 1, sizeof text, f);
    fclose(f);
    if (dynb__spec_parse(text, n, files[i], &s, err, sizeof err) != DYNB_OK) fail_msg("%s", err);
  }
  assert_int_equal(s.blocks[0].tableau.stages, 2); /* custom-scheme.json, last read */
  assert_true(s.clip && s.clip_max == 5 && s.clip_min == -5);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(spec_example_parses_with_defaults),
      cmocka_unit_test(bad_specs_name_their_key),
      cmocka_unit_test(round_trip_is_exact),
      cmocka_unit_test(truncated_specs_fail_cleanly),
      cmocka_unit_test(shipped_specs_parse),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
