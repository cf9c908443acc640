/* The JSON network spec (SPEC §3): documented defaults, every rejection
 * naming its key path, the hard limits reached and passed, exact round trips
 * through canonical JSON, truncated, mutated and allocation-starved input,
 * and the shipped example specs. No device needed. */
#include <cjson/cJSON.h>

#include "testutil.h"
#include "model/model.h"

/* The parsed struct is over 1 MiB (two 4096-point grids per block), so every
 * spec lives in static storage. */
static dynb__net_spec spec_a, spec_b;

static dynb_status parse(const char *text, dynb__net_spec *s, char *err, size_t n) {
  return dynb__spec_parse(text, strlen(text), "spec.json", s, err, n);
}

/* Parses text, failing the test with the message if it is rejected. */
static void parse_ok(const char *text, dynb__net_spec *s) {
  char err[512] = "";
  if (parse(text, s, err, sizeof err) != DYNB_OK) fail_msg("rejected: %s\n  text: %.300s", err, text);
}

/* Parses text, which must be rejected with a message starting with the
 * source name and containing needle. */
static void parse_bad(const char *text, size_t len, const char *needle) {
  char err[512] = "";
  dynb_status st = dynb__spec_parse(text, len, "spec.json", &spec_a, err, sizeof err);
  if (st != DYNB_STATUS_SPEC_ERROR) fail_msg("accepted (status %d): %.300s", (int)st, text);
  if (!strstr(err, needle) || strncmp(err, "spec.json: ", 11) != 0)
    fail_msg("message '%s' lacks '%s'\n  text: %.300s", err, needle, text);
  assert_int_equal(spec_a.nblocks, 0); /* a rejected spec is left zeroed */
}

/* ---- a small string builder for generated specs ---------------------------- */

typedef struct sbuf {
  char *s;
  size_t n, cap;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int need = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  assert_true(need >= 0);
  if (b->n + (size_t)need + 1 > b->cap) {
    b->cap = 2 * (b->n + (size_t)need + 1);
    b->s = realloc(b->s, b->cap);
    assert_non_null(b->s);
  }
  va_start(ap, fmt);
  vsnprintf(b->s + b->n, b->cap - b->n, fmt, ap);
  va_end(ap);
  b->n += (size_t)need;
}

/* "[0, 1, ..., n-1]" */
static void sb_grid(sbuf *b, int n) {
  sb_printf(b, "[");
  for (int i = 0; i < n; i++) sb_printf(b, i ? ",%d" : "%d", i);
  sb_printf(b, "]");
}

/* ---- defaults ------------------------------------------------------------------ */

/* The example of SPEC §3, verbatim. */
static const char *example =
    "{\"input\": {\"channels\": 1, \"height\": 28, \"width\": 28}, \"classes\": 10,\n"
    " \"open\":   {\"width\": 16, \"norm\": \"batch\"},\n"
    " \"blocks\": [{\"width\": 16, \"layer\": \"doublesym\", \"norm\": \"tv\", \"scheme\": \"rk4\",\n"
    "             \"t_states\": [0,1,2,3,4], \"t_controls\": [0,1,2,3,4]},\n"
    "            {\"width\": 32, \"layer\": \"doublesym\", \"norm\": \"tv\", \"scheme\": \"rk4\",\n"
    "             \"t_states\": [0,1,2,3,4], \"t_controls\": [0,1,2,3,4]}],\n"
    " \"head_width\": 32}\n";

static void spec_example_parses_with_defaults(void **state) {
  (void)state;
  dynb__net_spec *s = &spec_a;
  parse_ok(example, s);
  assert_int_equal(s->in_channels, 1);
  assert_int_equal(s->in_height, 28);
  assert_int_equal(s->in_width, 28);
  assert_int_equal(s->classes, 10);
  assert_int_equal(s->open_width, 16);
  assert_int_equal(s->open_norm, DYNB_NORM_BATCH);
  assert_int_equal(s->open_kernel, 3);          /* default */
  assert_int_equal(s->open_act, DYNB_ACT_RELU); /* default */
  assert_int_equal(s->nblocks, 2);
  for (int b = 0; b < 2; b++) {
    const dynb__block_spec *bs = &s->blocks[b];
    assert_int_equal(bs->width, 16 << b);
    assert_int_equal(bs->layer.kind, DYNB_LAYER_DOUBLESYM);
    assert_int_equal(bs->layer.norm, DYNB_NORM_TV);
    assert_int_equal(bs->layer.act, DYNB_ACT_RELU); /* default */
    assert_int_equal(bs->layer.kernel, 3);          /* default */
    assert_int_equal(bs->layer.channels, bs->width);
    assert_string_equal(bs->tableau.name, "rk4");
    assert_int_equal(bs->tableau.stages, 4);
    assert_int_equal(bs->nstates, 5);
    assert_int_equal(bs->ncontrols, 5);
    for (int i = 0; i < 5; i++) assert_true(bs->t_states[i] == i && bs->t_controls[i] == i);
  }
  assert_int_equal(s->connect_norm, DYNB_NORM_BATCH); /* default */
  assert_int_equal(s->connect_act, DYNB_ACT_RELU);    /* default */
  assert_int_equal(s->head_width, 32);
  assert_true(s->time_reg == 0);
  assert_false(s->clip);
}

#define HEAD "{\"input\": {\"channels\": 1, \"height\": 8, \"width\": 8}, \"classes\": 3, "
#define BLK_T(t) \
  "{\"width\": 4, \"layer\": \"doublesym\", \"norm\": \"tv\", \"scheme\": \"euler\", \"t_states\": " t
#define BLK BLK_T("[0,1]")
#define GOOD HEAD "\"blocks\": [" BLK "}]}"

/* Only the required keys: open, connect, t_controls and head_width take
 * their defaults; open.width is blocks[0].width. */
static void minimal_spec_takes_defaults(void **state) {
  (void)state;
  dynb__net_spec *s = &spec_a;
  parse_ok(HEAD "\"blocks\": [" BLK_T("[0, 0.5, 2]") "}, {\"width\": 7, \"layer\": "
                "\"preact\", \"norm\": \"none\", \"scheme\": \"rk1\", \"t_states\": [1, 3]}]}",
           s);
  assert_int_equal(s->open_width, 4);
  assert_int_equal(s->open_kernel, 3);
  assert_int_equal(s->open_norm, DYNB_NORM_BATCH);
  assert_int_equal(s->open_act, DYNB_ACT_RELU);
  assert_int_equal(s->connect_norm, DYNB_NORM_BATCH);
  assert_int_equal(s->connect_act, DYNB_ACT_RELU);
  assert_int_equal(s->head_width, 7); /* the last block's width */
  assert_int_equal(s->blocks[1].ncontrols, 2);
  assert_true(s->blocks[1].t_controls[0] == 1 && s->blocks[1].t_controls[1] == 3);
  assert_string_equal(s->blocks[1].tableau.name, "euler"); /* rk1 is euler's alias */
  assert_true(s->time_reg == 0);
  assert_false(s->clip);
}

static void optional_keys_are_read(void **state) {
  (void)state;
  dynb__net_spec *s = &spec_a;
  parse_ok(HEAD "\"open\": {\"width\": 4, \"norm\": \"none\", \"kernel\": 5, \"act\": \"tanh\"},"
                " \"blocks\": [" BLK ", \"act\": \"leaky_relu\", \"kernel\": 1, \"t_controls\": [0.5]}],"
                " \"connect\": {\"norm\": \"tv\", \"act\": \"identity\"}, \"head_width\": 9,"
                " \"time_reg\": 0.25, \"clip\": 2}",
           s);
  assert_int_equal(s->open_norm, DYNB_NORM_NONE);
  assert_int_equal(s->open_kernel, 5);
  assert_int_equal(s->open_act, DYNB_ACT_TANH);
  assert_int_equal(s->blocks[0].layer.act, DYNB_ACT_LEAKY_RELU);
  assert_int_equal(s->blocks[0].layer.kernel, 1);
  assert_int_equal(s->blocks[0].ncontrols, 1);
  assert_int_equal(s->connect_norm, DYNB_NORM_TV);
  assert_int_equal(s->connect_act, DYNB_ACT_IDENTITY);
  assert_int_equal(s->head_width, 9);
  assert_true(s->time_reg == 0.25);
  assert_true(s->clip && s->clip_min == -2 && s->clip_max == 2);
  parse_ok(HEAD "\"blocks\": [" BLK "}], \"clip\": {\"min\": -0.5, \"max\": 3}}", s);
  assert_true(s->clip && s->clip_min == -0.5 && s->clip_max == 3);
}

/* ---- rejections ----------------------------------------------------------------- */

typedef struct bad_case {
  const char *text, *needle;
} bad_case;

static void run_bad(const bad_case *cases, size_t n) {
  for (size_t i = 0; i < n; i++) parse_bad(cases[i].text, strlen(cases[i].text), cases[i].needle);
}
#define RUN_BAD(cases) run_bad(cases, sizeof cases / sizeof *cases)

static void syntax_errors_give_line_and_column(void **state) {
  (void)state;
  static const bad_case cases[] = {
      {"{", "invalid JSON at line 1, column 1"},
      {"{\n  \"classes\": ,\n}", "invalid JSON at line 2, column 14"},
      {GOOD "\n  x", "unexpected text after the JSON value at line 2, column 3"},
      {GOOD GOOD, "unexpected text after the JSON value"},
      {"{\"a\": 1,}", "invalid JSON at line 1, column 9"},
      {"  \n\t", "is empty"},
      {"", "is empty"},
      {"[1,2]", "spec.json: must be an object"},
      {"\"spec\"", "spec.json: must be an object"},
  };
  RUN_BAD(cases);
  /* A NUL inside would make cJSON ignore the rest; trailing NULs (a padded
   * buffer) are harmless. */
  static const char nul[] = "{\"input\"\0: 1}";
  parse_bad(nul, sizeof nul - 1, "NUL byte at line 1, column 9");
  static const char esc[] = "{\"classes\\u0000x\": 3}"; /* would read as "classes" */
  parse_bad(esc, sizeof esc - 1, "escaped NUL (\\u0000) at line 1, column 10");
  static const char padded[] = GOOD "\0\0\0";
  char err[512];
  assert_int_equal(dynb__spec_parse(padded, sizeof padded, "p", &spec_a, err, sizeof err), DYNB_OK);
}

static void unknown_keys_are_rejected_at_every_level(void **state) {
  (void)state;
  static const bad_case cases[] = {
      {HEAD "\"blocks\": [" BLK "}], \"colour\": 1}", "spec.json: colour: unknown key"},
      {"{\"input\": {\"channels\": 1, \"height\": 8, \"width\": 8, \"depth\": 1}, \"classes\": 3, "
       "\"blocks\": [" BLK "}]}",
       "input.depth: unknown key"},
      {HEAD "\"open\": {\"widht\": 4}, \"blocks\": [" BLK "}]}", "open.widht: unknown key"},
      {HEAD "\"blocks\": [" BLK "}], \"connect\": {\"kernel\": 1}}", "connect.kernel: unknown key"},
      {HEAD "\"blocks\": [" BLK ", \"steps\": 3}]}", "blocks[0].steps: unknown key"},
      {HEAD "\"blocks\": [" BLK "}, " BLK ", \"Width\": 3}]}", "blocks[1].Width: unknown key"},
      {HEAD "\"blocks\": [{\"width\": 4, \"layer\": \"double\", \"norm\": \"tv\", \"scheme\": "
            "{\"c\": [0], \"A\": [[0]], \"b\": [1], \"d\": 1}, \"t_states\": [0,1]}]}",
       "blocks[0].scheme.d: unknown key"},
      {HEAD "\"blocks\": [" BLK "}], \"clip\": {\"min\": -1, \"max\": 1, \"abs\": 1}}",
       "clip.abs: unknown key"},
      /* Keys from the file are tamed in messages: control bytes shown as ?. */
      {HEAD "\"blocks\": [" BLK "}], \"a\\u0001\\nb\": 1}", "spec.json: a??b: unknown key"},
  };
  RUN_BAD(cases);
  /* A megabyte key is cut, so the message stays short. */
  sbuf b = {0};
  sb_printf(&b, HEAD "\"blocks\": [" BLK "}], \"");
  for (int i = 0; i < 100000; i++) sb_printf(&b, "k");
  sb_printf(&b, "\": 1}");
  char err[512];
  assert_int_equal(parse(b.s, &spec_a, err, sizeof err), DYNB_STATUS_SPEC_ERROR);
  assert_non_null(strstr(err, "kkk...: unknown key"));
  assert_true(strlen(err) < 100);
  free(b.s);
}

static void duplicate_keys_are_rejected(void **state) {
  (void)state;
  static const bad_case cases[] = {
      {HEAD "\"blocks\": [" BLK "}], \"classes\": 3}", "spec.json: classes: key appears twice"},
      {"{\"input\": {\"channels\": 1, \"height\": 8, \"width\": 8, \"width\": 8}, \"classes\": 3, "
       "\"blocks\": [" BLK "}]}",
       "input.width: key appears twice"},
      {HEAD "\"open\": {\"norm\": \"tv\", \"norm\": \"tv\"}, \"blocks\": [" BLK "}]}",
       "open.norm: key appears twice"},
      {HEAD "\"blocks\": [" BLK "}], \"connect\": {\"act\": \"relu\", \"act\": \"tanh\"}}",
       "connect.act: key appears twice"},
      {HEAD "\"blocks\": [" BLK ", \"norm\": \"tv\"}]}", "blocks[0].norm: key appears twice"},
      {HEAD "\"blocks\": [{\"width\": 4, \"layer\": \"double\", \"norm\": \"tv\", \"scheme\": "
            "{\"c\": [0], \"A\": [[0]], \"c\": [0], \"b\": [1]}, \"t_states\": [0,1]}]}",
       "blocks[0].scheme.c: key appears twice"},
      {HEAD "\"blocks\": [" BLK "}], \"clip\": {\"min\": -1, \"max\": 1, \"min\": 0}}",
       "clip.min: key appears twice"},
      {HEAD "\"blocks\": [" BLK "}], \"blocks\": [" BLK "}]}", "blocks: key appears twice"},
  };
  RUN_BAD(cases);
}

static void wrong_types_are_rejected(void **state) {
  (void)state;
  static const bad_case cases[] = {
      {"{\"input\": [], \"classes\": 3, \"blocks\": [" BLK "}]}", "input: must be an object"},
      {HEAD "\"blocks\": [" BLK "}], \"head_width\": \"4\"}", "head_width: must be an integer"},
      {"{\"input\": {\"channels\": 1, \"height\": 8, \"width\": 8}, \"classes\": true, "
       "\"blocks\": [" BLK "}]}",
       "classes: must be an integer"},
      {HEAD "\"blocks\": {}}", "blocks: must be an array of 1..16 blocks"},
      {HEAD "\"blocks\": [3]}", "blocks[0]: must be an object"},
      {HEAD "\"blocks\": [{\"width\": 4, \"layer\": 3, \"norm\": \"tv\", \"scheme\": \"rk4\", "
            "\"t_states\": [0,1]}]}",
       "blocks[0].layer: must be a string, one of doublesym, double, preact"},
      {HEAD "\"blocks\": [{\"width\": 4, \"layer\": \"double\", \"norm\": \"tv\", \"scheme\": 4, "
            "\"t_states\": [0,1]}]}",
       "blocks[0].scheme: must be a name"},
      {HEAD "\"blocks\": [{\"width\": 4, \"layer\": \"double\", \"norm\": \"tv\", \"scheme\": [], "
            "\"t_states\": [0,1]}]}",
       "blocks[0].scheme: must be a name"},
      {HEAD "\"blocks\": [{\"width\": 4, \"layer\": \"double\", \"norm\": \"tv\", \"scheme\": "
            "\"rk4\", \"t_states\": \"0,1\"}]}",
       "blocks[0].t_states: must be an array"},
      {HEAD "\"blocks\": [{\"width\": 4, \"layer\": \"double\", \"norm\": \"tv\", \"scheme\": "
            "\"rk4\", \"t_states\": [0, \"1\"]}]}",
       "blocks[0].t_states[1]: must be a number"},
      {HEAD "\"blocks\": [" BLK ", \"t_controls\": [0, null]}]}",
       "blocks[0].t_controls[1]: must be a number"},
      {HEAD "\"blocks\": [" BLK "}], \"connect\": \"batch\"}", "connect: must be an object"},
      {HEAD "\"open\": {\"norm\": true}, \"blocks\": [" BLK "}]}", "open.norm: must be a string"},
      {HEAD "\"blocks\": [" BLK "}], \"clip\": \"5\"}", "clip: must be a number c > 0 or an object"},
      {HEAD "\"blocks\": [" BLK "}], \"clip\": {\"min\": \"a\", \"max\": 1}}",
       "clip.min: must be a finite number"},
      {HEAD "\"blocks\": [" BLK "}], \"time_reg\": \"x\"}", "time_reg: must be a finite number >= 0"},
      {HEAD "\"blocks\": [{\"width\": 4, \"layer\": \"double\", \"norm\": \"tv\", \"scheme\": "
            "{\"c\": [0, 1], \"A\": [[0, 0], 1], \"b\": [0, 1]}, \"t_states\": [0,1]}]}",
       "blocks[0].scheme.A[1]: must be an array"},
      {HEAD "\"blocks\": [{\"width\": 4, \"layer\": \"double\", \"norm\": \"tv\", \"scheme\": "
            "{\"c\": [0], \"A\": 0, \"b\": [1]}, \"t_states\": [0,1]}]}",
       "blocks[0].scheme.A: must be an array of rows"},
      {HEAD "\"blocks\": [{\"width\": 4, \"layer\": \"double\", \"norm\": \"tv\", \"scheme\": "
            "{\"c\": [\"0\"], \"A\": [[0]], \"b\": [1]}, \"t_states\": [0,1]}]}",
       "blocks[0].scheme.c[0]: must be a number"},
  };
  RUN_BAD(cases);
}

/* JSON numbers are doubles: an integer key must hold an integral value. */
static void non_integers_are_rejected(void **state) {
  (void)state;
  static const bad_case cases[] = {
      {"{\"input\": {\"channels\": 2.5, \"height\": 8, \"width\": 8}, \"classes\": 3, "
       "\"blocks\": [" BLK "}]}",
       "input.channels: must be an integer in 1..4096, got 2.5"},
      {"{\"input\": {\"channels\": 1e100, \"height\": 8, \"width\": 8}, \"classes\": 3, "
       "\"blocks\": [" BLK "}]}",
       "input.channels: must be an integer in 1..4096, got 1e+100"},
      {"{\"input\": {\"channels\": 1, \"height\": 1e400, \"width\": 8}, \"classes\": 3, "
       "\"blocks\": [" BLK "}]}",
       "input.height: must be an integer in 1..8192, got inf"},
      {HEAD "\"blocks\": [" BLK ", \"kernel\": 3.5}]}", "blocks[0].kernel: must be an integer in 1..15, got 3.5"},
      {HEAD "\"blocks\": [" BLK "}], \"head_width\": 2.5}", "head_width: must be an integer in 1..4096"},
      {HEAD "\"blocks\": [{\"width\": 4.000001, \"layer\": \"double\", \"norm\": \"tv\", "
            "\"scheme\": \"rk4\", \"t_states\": [0,1]}]}",
       "blocks[0].width: must be an integer"},
  };
  RUN_BAD(cases);
  parse_ok(HEAD "\"blocks\": [" BLK ", \"kernel\": 3.0}], \"head_width\": 1e1}", &spec_a);
  assert_int_equal(spec_a.head_width, 10);
}

static void missing_required_keys_are_named(void **state) {
  (void)state;
  static const bad_case cases[] = {
      {"{\"classes\": 3, \"blocks\": [" BLK "}]}", "spec.json: input: missing"},
      {"{\"input\": {\"channels\": 1, \"width\": 8}, \"classes\": 3, \"blocks\": [" BLK "}]}",
       "input.height: missing"},
      {"{\"input\": {\"channels\": 1, \"height\": 8, \"width\": 8}, \"blocks\": [" BLK "}]}",
       "classes: missing"},
      {HEAD "\"head_width\": 4}", "blocks: missing"},
      {HEAD "\"blocks\": [{\"layer\": \"double\", \"norm\": \"tv\", \"scheme\": \"rk4\", "
            "\"t_states\": [0,1]}]}",
       "blocks[0].width: missing"},
      {HEAD "\"blocks\": [{\"width\": 4, \"norm\": \"tv\", \"scheme\": \"rk4\", \"t_states\": [0,1]}]}",
       "blocks[0].layer: missing (required: one of doublesym, double, preact)"},
      {HEAD "\"blocks\": [{\"width\": 4, \"layer\": \"double\", \"scheme\": \"rk4\", "
            "\"t_states\": [0,1]}]}",
       "blocks[0].norm: missing (required: one of none, tv, batch)"},
      {HEAD "\"blocks\": [{\"width\": 4, \"layer\": \"double\", \"norm\": \"tv\", \"t_states\": [0,1]}]}",
       "blocks[0].scheme: missing"},
      {HEAD "\"blocks\": [{\"width\": 4, \"layer\": \"double\", \"norm\": \"tv\", \"scheme\": \"rk4\"}]}",
       "blocks[0].t_states: missing"},
      {HEAD "\"blocks\": [" BLK "}, {\"width\": 4, \"layer\": \"double\", \"norm\": \"tv\", "
            "\"scheme\": {\"c\": [0], \"b\": [1]}, \"t_states\": [0,1]}]}",
       "blocks[1].scheme.A: missing"},
      {HEAD "\"blocks\": [" BLK "}], \"clip\": {\"min\": 0}}", "clip.max: missing"},
  };
  RUN_BAD(cases);
}

static void values_out_of_range_are_rejected(void **state) {
  (void)state;
#define IN(c, h, w) "{\"input\": {\"channels\": " #c ", \"height\": " #h ", \"width\": " #w "}, "
  static const bad_case cases[] = {
      {IN(0, 8, 8) "\"classes\": 3, \"blocks\": [" BLK "}]}", "input.channels: must be an integer in 1..4096, got 0"},
      {IN(4097, 8, 8) "\"classes\": 3, \"blocks\": [" BLK "}]}", "input.channels: must be an integer in 1..4096, got 4097"},
      {IN(1, 0, 8) "\"classes\": 3, \"blocks\": [" BLK "}]}", "input.height: must be an integer in 1..8192, got 0"},
      {IN(1, 8, 8193) "\"classes\": 3, \"blocks\": [" BLK "}]}", "input.width: must be an integer in 1..8192, got 8193"},
      {IN(1, 8, 8) "\"classes\": 1, \"blocks\": [" BLK "}]}", "classes: must be an integer in 2..100000, got 1"},
      {IN(1, 8, 8) "\"classes\": 100001, \"blocks\": [" BLK "}]}", "classes: must be an integer in 2..100000"},
      {HEAD "\"blocks\": [{\"width\": 0, \"layer\": \"double\", \"norm\": \"tv\", \"scheme\": \"rk4\", "
            "\"t_states\": [0,1]}]}",
       "blocks[0].width: must be an integer in 1..4096, got 0"},
      {HEAD "\"blocks\": [" BLK "}, {\"width\": 4097, \"layer\": \"double\", \"norm\": \"tv\", "
            "\"scheme\": \"rk4\", \"t_states\": [0,1]}]}",
       "blocks[1].width: must be an integer in 1..4096, got 4097"},
      {HEAD "\"blocks\": [" BLK ", \"kernel\": 2}]}", "blocks[0].kernel: must be odd"},
      {HEAD "\"blocks\": [" BLK ", \"kernel\": 17}]}", "blocks[0].kernel: must be an integer in 1..15, got 17"},
      {HEAD "\"blocks\": [" BLK ", \"kernel\": -1}]}", "blocks[0].kernel: must be an integer in 1..15, got -1"},
      {HEAD "\"open\": {\"kernel\": 4}, \"blocks\": [" BLK "}]}", "open.kernel: must be odd"},
      {HEAD "\"open\": {\"width\": 5}, \"blocks\": [" BLK "}]}", "open.width: is 5 but blocks[0].width is 4"},
      {HEAD "\"blocks\": [" BLK "}], \"head_width\": 0}", "head_width: must be an integer in 1..4096, got 0"},
      {HEAD "\"blocks\": [" BLK "}], \"head_width\": 4097}", "head_width: must be an integer in 1..4096"},
      {HEAD "\"blocks\": []}", "blocks: must be an array of 1..16 blocks"},
      {HEAD "\"blocks\": [" BLK_T("[0]") "}]}", "blocks[0].t_states: must have 2..4096 entries, has 1"},
      {HEAD "\"blocks\": [" BLK ", \"t_controls\": []}]}", "blocks[0].t_controls: must have 1..4096 entries, has 0"},
      {HEAD "\"blocks\": [" BLK_T("[0, 1e400]") "}]}", "blocks[0].t_states[1]: must be finite, got inf"},
      {HEAD "\"blocks\": [" BLK ", \"t_controls\": [-1e999]}]}", "blocks[0].t_controls[0]: must be finite, got -inf"},
      {HEAD "\"blocks\": [" BLK_T("[0, 1, 1]") "}]}",
       "blocks[0].t_states[2]: must be greater than t_states[1] (1)"},
      {HEAD "\"blocks\": [" BLK ", \"t_controls\": [2, 0.5]}]}",
       "blocks[0].t_controls[1]: must be greater than t_controls[0] (2)"},
      {HEAD "\"blocks\": [" BLK "}], \"time_reg\": -1}", "time_reg: must be a finite number >= 0"},
      {HEAD "\"blocks\": [" BLK "}], \"time_reg\": 1e999}", "time_reg: must be a finite number >= 0"},
      {HEAD "\"blocks\": [" BLK "}], \"clip\": 0}", "clip: must be a finite number c > 0"},
      {HEAD "\"blocks\": [" BLK "}], \"clip\": -1}", "clip: must be a finite number c > 0"},
      {HEAD "\"blocks\": [" BLK "}], \"clip\": 1e400}", "clip: must be a finite number c > 0 (box [-c, c]), got inf"},
      {HEAD "\"blocks\": [" BLK "}], \"clip\": {\"min\": 1, \"max\": 1}}", "clip: needs min < max"},
      {HEAD "\"blocks\": [" BLK "}], \"clip\": {\"min\": 0, \"max\": 1e999}}", "clip.max: must be a finite number"},
  };
#undef IN
  RUN_BAD(cases);
}

static void unknown_names_are_rejected(void **state) {
  (void)state;
  static const bad_case cases[] = {
      {HEAD "\"blocks\": [{\"width\": 4, \"layer\": \"triple\", \"norm\": \"tv\", \"scheme\": \"euler\", "
            "\"t_states\": [0,1]}]}",
       "blocks[0].layer: unknown value 'triple' (one of doublesym, double, preact)"},
      {HEAD "\"blocks\": [{\"width\": 4, \"layer\": \"double\", \"norm\": \"group\", \"scheme\": "
            "\"euler\", \"t_states\": [0,1]}]}",
       "blocks[0].norm: unknown value 'group' (one of none, tv, batch)"},
      {HEAD "\"blocks\": [" BLK ", \"act\": \"gelu\"}]}",
       "blocks[0].act: unknown value 'gelu' (one of identity, relu, tanh, leaky_relu)"},
      {HEAD "\"blocks\": [{\"width\": 4, \"layer\": \"double\", \"norm\": \"tv\", \"scheme\": \"rk5\", "
            "\"t_states\": [0,1]}]}",
       "blocks[0].scheme: unknown scheme 'rk5' (one of euler, rk1, midpoint"},
      {HEAD "\"blocks\": [{\"width\": 4, \"layer\": \"double\", \"norm\": \"tv\", \"scheme\": \"RK4\", "
            "\"t_states\": [0,1]}]}",
       "blocks[0].scheme: unknown scheme 'RK4'"},
      {HEAD "\"blocks\": [" BLK "}], \"connect\": {\"act\": \"swish\"}}", "connect.act: unknown value 'swish'"},
      {HEAD "\"blocks\": [" BLK "}], \"connect\": {\"norm\": \"layer\"}}", "connect.norm: unknown value 'layer'"},
      {HEAD "\"open\": {\"norm\": \"layer\"}, \"blocks\": [" BLK "}]}", "open.norm: unknown value 'layer'"},
      {HEAD "\"open\": {\"act\": \"Relu\"}, \"blocks\": [" BLK "}]}", "open.act: unknown value 'Relu'"},
  };
  RUN_BAD(cases);
}

#define CUSTOM(scheme) \
  HEAD "\"blocks\": [{\"width\": 4, \"layer\": \"double\", \"norm\": \"tv\", \"scheme\": " scheme ", \"t_states\": [0,1]}]}"

static void bad_custom_tableaux_are_rejected(void **state) {
  (void)state;
  static const bad_case cases[] = {
      {CUSTOM("{\"c\": [0, 1], \"A\": [[0, 1], [1, 0]], \"b\": [0.5, 0.5]}"),
       "blocks[0].scheme: A[0][1] = 1 is on or above the diagonal"},
      {CUSTOM("{\"c\": [0, 1], \"A\": [[0, 0], [1, 2]], \"b\": [0.5, 0.5]}"),
       "blocks[0].scheme: A[1][1] = 2 is on or above the diagonal"},
      {CUSTOM("{\"c\": [0, 1], \"A\": [[0, 0], [1, 0]], \"b\": [1]}"),
       "blocks[0].scheme: b has 1 entries for 2 stages"},
      {CUSTOM("{\"c\": [0, 1], \"A\": [[0, 0], [1]], \"b\": [0.5, 0.5]}"),
       "blocks[0].scheme.A[1]: has 1 entries; A must be 2x2"},
      {CUSTOM("{\"c\": [0, 1], \"A\": [[0, 0]], \"b\": [0.5, 0.5]}"),
       "blocks[0].scheme: A is 1x2; it must be square, 2x2"},
      {CUSTOM("{\"c\": [0, 1], \"A\": [[0, 0], [1, 0], [0, 0]], \"b\": [0.5, 0.5]}"),
       "blocks[0].scheme: A is 3x2"},
      {CUSTOM("{\"c\": [], \"A\": [], \"b\": []}"), "blocks[0].scheme.c: must have 1..16 entries, has 0"},
      {CUSTOM("{\"c\": [0], \"A\": [[0]], \"b\": [1e400]}"), "blocks[0].scheme.b[0]: must be finite"},
      {CUSTOM("{}"), "blocks[0].scheme.c: missing"},
  };
  RUN_BAD(cases);
}

/* Pooling after every connecting layer but the last halves H and W
 * (floored); pooling a side of 1 leaves nothing. */
static void unbuildable_pooling_chain_is_rejected(void **state) {
  (void)state;
  static const bad_case cases[] = {
      {"{\"input\": {\"channels\": 1, \"height\": 2, \"width\": 2}, \"classes\": 3, \"blocks\": [" BLK
       "}, " BLK "}, " BLK "}]}",
       "blocks[2]: input.height x input.width is 1x1 after 1 pooling(s)"},
      {"{\"input\": {\"channels\": 1, \"height\": 1, \"width\": 5}, \"classes\": 3, \"blocks\": [" BLK
       "}, " BLK "}]}",
       "blocks[1]: input.height x input.width is 1x5 after 0 pooling(s)"},
      {"{\"input\": {\"channels\": 1, \"height\": 3, \"width\": 3}, \"classes\": 3, \"blocks\": [" BLK
       "}, " BLK "}, " BLK "}]}",
       "blocks[2]: input.height x input.width is 1x1"},
  };
  RUN_BAD(cases);
  /* 3x3 pools once to 1x1 (floored), and a single block needs no pooling. */
  parse_ok("{\"input\": {\"channels\": 1, \"height\": 3, \"width\": 3}, \"classes\": 3, \"blocks\": [" BLK
           "}, " BLK "}]}",
           &spec_a);
  parse_ok("{\"input\": {\"channels\": 1, \"height\": 1, \"width\": 1}, \"classes\": 3, \"blocks\": [" BLK
           "}]}",
           &spec_a);
}

/* ---- hard limits: reached, then passed ------------------------------------------- */

/* A spec with `nb` blocks on a side x side input, each with grids of
 * `points` states and `controls` controls. */
static char *big_spec(int side, int nb, int points, int controls) {
  sbuf b = {0};
  sb_printf(&b, "{\"input\": {\"channels\": 4096, \"height\": %d, \"width\": %d}, \"classes\": 100000, "
                "\"blocks\": [", side, side);
  for (int i = 0; i < nb; i++) {
    sb_printf(&b, "%s{\"width\": 4096, \"layer\": \"double\", \"norm\": \"batch\", \"kernel\": 15, "
                  "\"scheme\": \"rk4\", \"t_states\": ", i ? ", " : "");
    sb_grid(&b, points);
    sb_printf(&b, ", \"t_controls\": ");
    sb_grid(&b, controls);
    sb_printf(&b, "}");
  }
  sb_printf(&b, "], \"head_width\": 4096}");
  return b.s;
}

static void limits_are_reached_and_enforced(void **state) {
  (void)state;
  /* Every integer cap at once; 14 blocks is the most an 8192 side allows
   * (13 poolings reach 1x1), so the block cap of 16 is checked separately. */
  char *t = big_spec(8192, 14, DYNB_MAX_TIME_POINTS, DYNB_MAX_TIME_POINTS);
  parse_ok(t, &spec_a);
  assert_int_equal(spec_a.nblocks, 14);
  assert_int_equal(spec_a.blocks[13].nstates, DYNB_MAX_TIME_POINTS);
  assert_true(spec_a.blocks[13].t_controls[DYNB_MAX_TIME_POINTS - 1] == DYNB_MAX_TIME_POINTS - 1);
  free(t);
  t = big_spec(8192, 15, 2, 1);
  parse_bad(t, strlen(t), "blocks[14]: input.height x input.width is 1x1 after 13 pooling(s)");
  free(t);
  t = big_spec(8192, DYNB_MAX_BLOCKS + 1, 2, 1);
  parse_bad(t, strlen(t), "blocks: must be an array of 1..16 blocks");
  free(t);
  t = big_spec(8, 1, DYNB_MAX_TIME_POINTS + 1, 1);
  parse_bad(t, strlen(t), "blocks[0].t_states: must have 2..4096 entries, has 4097");
  free(t);
  t = big_spec(8, 1, 2, DYNB_MAX_TIME_POINTS + 1);
  parse_bad(t, strlen(t), "blocks[0].t_controls: must have 1..4096 entries, has 4097");
  free(t);

  /* Tableaux of DYNB_MAX_STAGES stages, then one more. */
  for (int s = DYNB_MAX_STAGES; s <= DYNB_MAX_STAGES + 1; s++) {
    sbuf b = {0};
    sb_printf(&b, HEAD "\"blocks\": [{\"width\": 4, \"layer\": \"double\", \"norm\": \"tv\", "
                       "\"t_states\": [0,1], \"scheme\": {\"c\": ");
    sb_grid(&b, s);
    sb_printf(&b, ", \"b\": ");
    sb_grid(&b, s);
    sb_printf(&b, ", \"A\": [");
    for (int i = 0; i < s; i++) {
      sb_printf(&b, i ? ", [" : "[");
      for (int j = 0; j < s; j++) sb_printf(&b, j ? ",%d" : "%d", j < i ? 1 : 0);
      sb_printf(&b, "]");
    }
    sb_printf(&b, "]}}]}");
    if (s == DYNB_MAX_STAGES) {
      parse_ok(b.s, &spec_a);
      assert_int_equal(spec_a.blocks[0].tableau.stages, DYNB_MAX_STAGES);
      assert_true(spec_a.blocks[0].tableau.a[15][14] == 1 && spec_a.blocks[0].tableau.a[14][15] == 0);
    } else {
      parse_bad(b.s, b.n, "blocks[0].scheme.c: must have 1..16 entries, has 17");
    }
    free(b.s);
  }
}

/* 16 MiB of text and 2^18 commas are accepted; one more byte or comma is not. */
static void text_size_caps(void **state) {
  (void)state;
  const size_t cap = 16u << 20;
  char *t = malloc(cap + 1);
  assert_non_null(t);
  memset(t, ' ', cap + 1);
  memcpy(t, GOOD, strlen(GOOD));
  char err[512];
  assert_int_equal(dynb__spec_parse(t, cap, "big.json", &spec_a, err, sizeof err), DYNB_OK);
  parse_bad(t, cap + 1, "is too large: 16777217 bytes");
  free(t);

  /* The prefix holds a few commas; the array of zeros brings the total to
   * the cap, then one past it. */
  const char *prefix = HEAD "\"blocks\": [" BLK "}], \"x\": [0";
  size_t base = 0;
  for (const char *c = prefix; *c; c++) base += *c == ',';
  for (size_t total = 1u << 18; total <= (1u << 18) + 1; total++) {
    sbuf b = {0};
    sb_printf(&b, "%s", prefix);
    for (size_t i = base; i < total; i++) sb_printf(&b, ",0");
    sb_printf(&b, "]}");
    if (total == 1u << 18)
      parse_bad(b.s, b.n, "spec.json: x: unknown key"); /* past the text check */
    else
      parse_bad(b.s, b.n, "has too many values (262145 commas, at most 262144)");
    free(b.s);
  }
}

/* ---- writing ------------------------------------------------------------------------ */

/* parse → to_json → parse gives the same struct, and to_json is a fixed
 * point (canonical). */
static void check_round_trip(const char *text) {
  char err[512];
  parse_ok(text, &spec_a);
  char *json = dynb__spec_to_json(&spec_a);
  assert_non_null(json);
  if (dynb__spec_parse(json, strlen(json), "round-trip", &spec_b, err, sizeof err) != DYNB_OK)
    fail_msg("%s\n  json: %.300s", err, json);
  assert_memory_equal(&spec_a, &spec_b, sizeof spec_a);
  char *again = dynb__spec_to_json(&spec_b);
  assert_non_null(again);
  assert_string_equal(json, again);
  free(json);
  free(again);
}

static const char *custom_text =
    HEAD "\"blocks\": [{\"width\": 4, \"layer\": \"preact\", \"norm\": \"batch\", \"act\": \"tanh\","
    " \"scheme\": {\"c\": [0, 0.1, 0.7], \"A\": [[0,0,0],[0.1,0,0],[0.3333333333333333,0.36666666666666664,0]],"
    " \"b\": [0.2, 0.3, 0.5]}, \"t_states\": [0, 0.1, 0.30000000000000004, 1, 1e300],"
    " \"t_controls\": [-5e-324, 2.2250738585072014e-308, 0.5]}],"
    " \"time_reg\": 0.001, \"clip\": {\"min\": -2, \"max\": 3}}";

static void round_trip_is_exact(void **state) {
  (void)state;
  check_round_trip(example);
  check_round_trip(custom_text);
  check_round_trip(GOOD);
  /* Values that need 16 and 17 significant digits survive exactly. */
  parse_ok(custom_text, &spec_a);
  assert_true(spec_a.blocks[0].tableau.a[2][0] == 1.0 / 3);
  assert_true(spec_a.blocks[0].t_states[2] == 0.1 + 0.2);
  assert_true(spec_a.blocks[0].t_controls[0] == -5e-324);
  static const char *const schemes[] = {"euler", "rk1", "midpoint", "heun", "rk3", "ssprk3", "rk4", "rk38"};
  for (size_t i = 0; i < sizeof schemes / sizeof *schemes; i++) {
    sbuf b = {0};
    sb_printf(&b, HEAD "\"blocks\": [{\"width\": 4, \"layer\": \"double\", \"norm\": \"none\", "
                       "\"scheme\": \"%s\", \"t_states\": [0, 0.1, 0.2]}]}", schemes[i]);
    check_round_trip(b.s);
    free(b.s);
  }
}

/* Values set in the struct directly (not read from text) round-trip too. */
static void written_doubles_read_back_exactly(void **state) {
  (void)state;
  char err[512];
  parse_ok(GOOD, &spec_a);
  spec_a.time_reg = 1.0 / 3;
  spec_a.clip = true, spec_a.clip_min = -0.1, spec_a.clip_max = 0.1 * 3;
  spec_a.blocks[0].t_states[1] = 2.0 / 3;
  spec_a.blocks[0].t_controls[0] = 0.1;
  spec_a.blocks[0].t_controls[1] = 4.0 / 3;
  char *json = dynb__spec_to_json(&spec_a);
  assert_non_null(json);
  assert_int_equal(dynb__spec_parse(json, strlen(json), "rt", &spec_b, err, sizeof err), DYNB_OK);
  assert_memory_equal(&spec_a, &spec_b, sizeof spec_a);
  /* Every key written, defaults included. */
  static const char *const keys[] = {"\"input\":{\"channels\":1,\"height\":8,\"width\":8}",
                                     "\"classes\":3", "\"open\":{\"width\":4,\"norm\":\"batch\",\"kernel\":3,\"act\":\"relu\"}",
                                     "\"t_controls\":[0.1,1.3333333333333333]", "\"act\":\"relu\"",
                                     "\"kernel\":3", "\"connect\":{\"norm\":\"batch\",\"act\":\"relu\"}",
                                     "\"head_width\":4", "\"time_reg\":0.3333333333333333",
                                     "\"clip\":{\"min\":-0.1,\"max\":0.30000000000000004}"};
  for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
    if (!strstr(json, keys[i])) fail_msg("'%s' lacks %s", json, keys[i]);
  free(json);
  assert_null(dynb__spec_to_json(NULL));
}

/* ---- hostile input ------------------------------------------------------------------ */

static void truncated_specs_fail_cleanly(void **state) {
  (void)state;
  const char *texts[] = {example, custom_text};
  for (int k = 0; k < 2; k++) {
    size_t n = strlen(texts[k]);
    for (size_t len = 0; len < n; len++) {
      char err[512] = "";
      /* The cut text is copied so that a read past len would be caught by
       * valgrind or ASan. */
      char *cut = malloc(len ? len : 1);
      assert_non_null(cut);
      memcpy(cut, texts[k], len);
      dynb_status st = dynb__spec_parse(cut, len, "cut.json", &spec_a, err, sizeof err);
      /* The example ends in "}\n": cutting only the newline leaves it whole. */
      if (st == DYNB_OK && len == n - 1 && texts[k][n - 1] == '\n') {
        free(cut);
        continue;
      }
      if (st != DYNB_STATUS_SPEC_ERROR) fail_msg("cut at %zu accepted", len);
      if (strncmp(err, "cut.json: ", 10) != 0) fail_msg("cut at %zu: '%s'", len, err);
      assert_int_equal(spec_a.nblocks, 0);
      free(cut);
    }
  }
}

/* Random byte edits of valid specs: each result is a clean error or a spec
 * that round-trips. */
static void mutated_specs_fail_cleanly(void **state) {
  (void)state;
  static const char alphabet[] = "{}[],:\"0123456789.-+eE ntfalsru\\\n";
  tu_rng r = tu_rng_seed(20240611);
  const char *texts[] = {example, custom_text};
  int accepted = 0;
  const int rounds = 3000;
  for (int it = 0; it < rounds; it++) {
    const char *src = texts[it % 2];
    size_t n = strlen(src);
    char *t = malloc(n + 8);
    assert_non_null(t);
    memcpy(t, src, n);
    int edits = 1 + (int)tu_uniform(&r, 0, 3);
    for (int e = 0; e < edits; e++) {
      size_t pos = (size_t)tu_uniform(&r, 0, (double)n);
      if (pos >= n) pos = n - 1;
      double kind = tu_uniform(&r, 0, 1);
      if (kind < 0.4)
        t[pos] = alphabet[(size_t)tu_uniform(&r, 0, sizeof alphabet - 1) % (sizeof alphabet - 1)];
      else if (kind < 0.7)
        t[pos] = (char)(int)tu_uniform(&r, 0, 256);
      else if (n > 1)
        memmove(t + pos, t + pos + 1, n - pos - 1), n--;
    }
    char err[512] = "";
    dynb_status st = dynb__spec_parse(t, n, "fuzz.json", &spec_a, err, sizeof err);
    if (st == DYNB_OK) {
      accepted++;
      char *json = dynb__spec_to_json(&spec_a);
      assert_non_null(json);
      assert_int_equal(dynb__spec_parse(json, strlen(json), "rt", &spec_b, err, sizeof err), DYNB_OK);
      assert_memory_equal(&spec_a, &spec_b, sizeof spec_a);
      free(json);
    } else {
      assert_int_equal(st, DYNB_STATUS_SPEC_ERROR);
      if (strncmp(err, "fuzz.json: ", 11) != 0) fail_msg("round %d: '%s'", it, err);
    }
    free(t);
  }
  printf("mutations: %d of %d still valid specs (round-tripped), the rest rejected\n", accepted,
         rounds);
}

/* An allocator that fails from the Nth call on, installed into cJSON. */
static long alloc_budget = -1;
static void *failing_malloc(size_t n) {
  if (alloc_budget == 0) return NULL;
  if (alloc_budget > 0) alloc_budget--;
  return malloc(n);
}

static void allocation_failures_are_clean(void **state) {
  (void)state;
  cJSON_Hooks hooks = {failing_malloc, free};
  char err[512];
  parse_ok(custom_text, &spec_b);
  char *want = dynb__spec_to_json(&spec_b);
  assert_non_null(want);
  /* Parse: each failure is a clean error (cJSON cannot tell us it was
   * memory, so it reads as invalid JSON), until the budget suffices. */
  long n = 0;
  for (;; n++) {
    cJSON_InitHooks(&hooks);
    alloc_budget = n;
    dynb_status st = dynb__spec_parse(custom_text, strlen(custom_text), "oom.json", &spec_a, err, sizeof err);
    cJSON_InitHooks(NULL);
    if (st == DYNB_OK) break;
    assert_int_equal(st, DYNB_STATUS_SPEC_ERROR);
  }
  assert_memory_equal(&spec_a, &spec_b, sizeof spec_a);
  /* Write: NULL, never a partial text, until the budget suffices. */
  long m = 0;
  for (;; m++) {
    cJSON_InitHooks(&hooks);
    alloc_budget = m;
    char *got = dynb__spec_to_json(&spec_b);
    cJSON_InitHooks(NULL);
    if (!got) continue;
    assert_string_equal(got, want);
    free(got);
    break;
  }
  alloc_budget = -1;
  printf("allocation failures: parse clean at every one of %ld, write at every one of %ld\n", n, m);
  free(want);
}

static void bad_arguments(void **state) {
  (void)state;
  char err[512];
  assert_int_equal(dynb__spec_parse(GOOD, strlen(GOOD), "x", NULL, err, sizeof err),
                   DYNB_STATUS_INVALID_ARGUMENT);
  assert_non_null(strstr(err, "x: no output spec"));
  assert_int_equal(dynb__spec_parse(NULL, 3, "x", &spec_a, err, sizeof err), DYNB_STATUS_SPEC_ERROR);
  /* No message buffer, or a tiny one: nothing written past it. */
  assert_int_equal(dynb__spec_parse("{", 1, "x", &spec_a, NULL, 100), DYNB_STATUS_SPEC_ERROR);
  char tiny[8];
  memset(tiny, '#', sizeof tiny);
  assert_int_equal(dynb__spec_parse("{", 1, "x", &spec_a, tiny, 4), DYNB_STATUS_SPEC_ERROR);
  assert_string_equal(tiny, "x: ");
  assert_true(tiny[4] == '#' && tiny[7] == '#');
  assert_int_equal(dynb__spec_parse("{", 1, NULL, &spec_a, err, sizeof err), DYNB_STATUS_SPEC_ERROR);
  assert_non_null(strstr(err, "<string>: invalid JSON"));
  /* Success clears a stale message. */
  assert_int_equal(dynb__spec_parse(GOOD, strlen(GOOD), "x", &spec_a, err, sizeof err), DYNB_OK);
  assert_string_equal(err, "");
}

/* ---- shipped specs ------------------------------------------------------------------ */

/* Reads specs/NAME, found from this file's absolute path (tests/..). */
static void parse_shipped(const char *name, dynb__net_spec *s) {
  char path[4096];
  snprintf(path, sizeof path, "%s", __FILE__);
  char *slash = strrchr(path, '/');
  assert_non_null(slash);
  snprintf(slash, sizeof path - (size_t)(slash - path), "/../specs/%s", name);
  FILE *f = fopen(path, "rb");
  if (!f) fail_msg("cannot open %s", path);
  static char text[1 << 16];
  size_t n = fread(text, 1, sizeof text, f);
  fclose(f);
  assert_true(n < sizeof text);
  char err[512];
  if (dynb__spec_parse(text, n, name, s, err, sizeof err) != DYNB_OK) fail_msg("%s", err);
  char *json = dynb__spec_to_json(s);
  assert_non_null(json);
  assert_int_equal(dynb__spec_parse(json, strlen(json), "rt", &spec_b, err, sizeof err), DYNB_OK);
  assert_memory_equal(s, &spec_b, sizeof *s);
  free(json);
}

static void shipped_specs_parse(void **state) {
  (void)state;
  dynb__net_spec *s = &spec_a;
  /* The reference configuration of SPEC §1.3 on 28x28x1 Fashion-MNIST. */
  parse_shipped("reference.json", s);
  assert_true(s->in_channels == 1 && s->in_height == 28 && s->in_width == 28 && s->classes == 10);
  assert_int_equal(s->nblocks, 3);
  for (int b = 0; b < 3; b++) {
    assert_int_equal(s->blocks[b].width, 16 << b);
    assert_int_equal(s->blocks[b].layer.kind, DYNB_LAYER_DOUBLESYM);
    assert_int_equal(s->blocks[b].layer.norm, DYNB_NORM_TV);
    assert_string_equal(s->blocks[b].tableau.name, "rk4");
    assert_int_equal(s->blocks[b].nstates, 5);
    assert_int_equal(s->blocks[b].ncontrols, 5);
    assert_true(s->blocks[b].t_states[4] == 4 && s->blocks[b].t_controls[4] == 4);
  }
  assert_int_equal(s->head_width, 64);

  parse_shipped("small.json", s);
  assert_int_equal(s->nblocks, 3);
  assert_int_equal(s->blocks[2].width, 32);

  /* A custom tableau, and control grids that differ from the state grids. */
  parse_shipped("custom-scheme.json", s);
  assert_string_equal(s->blocks[0].tableau.name, "custom");
  assert_int_equal(s->blocks[0].tableau.stages, 2);
  assert_true(s->blocks[0].tableau.a[1][0] == 0.5);
  assert_int_equal(s->blocks[0].nstates, 4);
  assert_int_equal(s->blocks[0].ncontrols, 2);
  assert_true(s->blocks[0].t_controls[0] == 0.25);
  assert_true(s->time_reg == 1e-4);
  assert_true(s->clip && s->clip_max == 5 && s->clip_min == -5);
}

/* ---- adaptive blocks (SPEC §1.5) --------------------------------------------- */

#define ADAPT(scheme, extra)                                                                    \
  HEAD "\"blocks\": [{\"width\": 4, \"layer\": \"double\", \"norm\": \"tv\", \"scheme\": " scheme \
       ", \"t_states\": [0,1]" extra "}]}"

static void adaptive_keys_are_read_with_defaults(void **state) {
  (void)state;
  dynb__net_spec *s = &spec_a;
  parse_ok(ADAPT("\"dopri5\"", ""), s);
  assert_true(s->blocks[0].tableau.embedded);
  assert_true(s->blocks[0].rtol == 1e-3 && s->blocks[0].atol == 1e-4);
  assert_int_equal(s->blocks[0].max_steps, 100);
  assert_int_equal(s->blocks[0].gradient, DYNB_GRADIENT_DISCRETE);
  parse_ok(ADAPT("\"bosh3\"", ", \"rtol\": 0, \"atol\": 1e-9, \"max_steps\": 1, "
                              "\"gradient\": \"adjoint\""),
           s);
  assert_true(s->blocks[0].rtol == 0 && s->blocks[0].atol == 1e-9);
  assert_int_equal(s->blocks[0].max_steps, 1);
  assert_int_equal(s->blocks[0].gradient, DYNB_GRADIENT_ADJOINT);
  /* gradient applies to fixed-step blocks too; the tolerances stay zero. */
  parse_ok(ADAPT("\"rk4\"", ", \"gradient\": \"adjoint\""), s);
  assert_int_equal(s->blocks[0].gradient, DYNB_GRADIENT_ADJOINT);
  assert_true(s->blocks[0].rtol == 0 && s->blocks[0].max_steps == 0);
  parse_ok(ADAPT("{\"c\": [0, 1], \"A\": [[0, 0], [1, 0]], \"b\": [0.5, 0.5], "
                 "\"b_err\": [1, 0], \"order\": 2}",
                 ", \"rtol\": 1e-6"),
           s);
  assert_true(s->blocks[0].tableau.embedded && s->blocks[0].tableau.order == 2);
  assert_true(s->blocks[0].tableau.b_err[0] == 1 && s->blocks[0].rtol == 1e-6);
  check_round_trip(ADAPT("\"dopri5\"", ", \"rtol\": 1e-7, \"gradient\": \"adjoint\""));
  check_round_trip(ADAPT("{\"c\": [0, 1], \"A\": [[0, 0], [1, 0]], \"b\": [0.5, 0.5], "
                         "\"b_err\": [1, 0], \"order\": 2}",
                         ", \"max_steps\": 7"));
}

static void adaptive_errors_name_the_key(void **state) {
  (void)state;
  static const bad_case cases[] = {
      {ADAPT("{\"c\": [0, 1], \"A\": [[0, 0], [1, 0]], \"b\": [0.5, 0.5]}", ", \"rtol\": 1e-3"),
       "blocks[0].rtol: only for an adaptive scheme"},
      {ADAPT("\"rk4\"", ", \"atol\": 1e-3"),
       "blocks[0].atol: only for an adaptive scheme (an embedded pair: dopri5, bosh3, "
       "heun_euler, or a custom scheme with b_err); scheme 'rk4' takes fixed steps"},
      {ADAPT("\"euler\"", ", \"max_steps\": 5"), "blocks[0].max_steps: only for an adaptive"},
      {ADAPT("\"dopri5\"", ", \"max_steps\": 0"), "blocks[0].max_steps: must be an integer in 1..4096, got 0"},
      {ADAPT("\"dopri5\"", ", \"max_steps\": -3"), "blocks[0].max_steps: must be an integer in 1..4096"},
      {ADAPT("\"dopri5\"", ", \"max_steps\": 4097"), "blocks[0].max_steps: must be an integer in 1..4096"},
      {ADAPT("\"dopri5\"", ", \"rtol\": -1e-3"), "blocks[0].rtol: must be a finite number >= 0"},
      {ADAPT("\"dopri5\"", ", \"atol\": 0"), "blocks[0].atol: must be a finite number > 0"},
      {ADAPT("\"dopri5\"", ", \"atol\": \"1e-3\""), "blocks[0].atol: must be a finite number > 0"},
      {ADAPT("\"dopri5\"", ", \"rtol\": 1e400"), "blocks[0].rtol: must be a finite number"},
      {ADAPT("\"dopri5\"", ", \"gradient\": \"backsolve\""),
       "blocks[0].gradient: unknown value 'backsolve' (one of discrete, adjoint)"},
      {ADAPT("\"dopri5\"", ", \"gradient\": 1"), "blocks[0].gradient: must be a string"},
      {HEAD "\"blocks\": [{\"width\": 4, \"layer\": \"double\", \"norm\": \"batch\", "
            "\"scheme\": \"heun_euler\", \"t_states\": [0,1]}]}",
       "blocks[0].norm: batch norm cannot be used in an adaptive block (scheme 'heun_euler')"},
      {ADAPT("{\"c\": [0, 1], \"A\": [[0, 0], [1, 0]], \"b\": [0.5, 0.5], \"b_err\": [1, 0]}", ""),
       "blocks[0].scheme.order: missing (required with b_err"},
      {ADAPT("{\"c\": [0, 1], \"A\": [[0, 0], [1, 0]], \"b\": [0.5, 0.5], \"order\": 2}", ""),
       "blocks[0].scheme.order: only for an embedded scheme: give b_err too"},
      {ADAPT("{\"c\": [0, 1], \"A\": [[0, 0], [1, 0]], \"b\": [0.5, 0.5], \"b_err\": [1], "
             "\"order\": 2}", ""),
       "blocks[0].scheme: b_err has 1 entries for 2 stages"},
      {ADAPT("{\"c\": [0, 1], \"A\": [[0, 0], [1, 0]], \"b\": [0.5, 0.5], \"b_err\": [0.5, 0.5], "
             "\"order\": 2}", ""),
       "blocks[0].scheme: b_err equals b"},
      {ADAPT("{\"c\": [0, 1], \"A\": [[0, 0], [1, 0]], \"b\": [0.5, 0.5], \"b_err\": [1, 0], "
             "\"order\": 0}", ""),
       "blocks[0].scheme.order: must be an integer in 1..16, got 0"},
      {ADAPT("{\"c\": [0, 1], \"A\": [[0, 0], [1, 0]], \"b\": [0.5, 0.5], \"b_err\": [1, \"x\"], "
             "\"order\": 2}", ""),
       "blocks[0].scheme.b_err[1]: must be a number"},
  };
  RUN_BAD(cases);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(spec_example_parses_with_defaults),
      cmocka_unit_test(minimal_spec_takes_defaults),
      cmocka_unit_test(optional_keys_are_read),
      cmocka_unit_test(syntax_errors_give_line_and_column),
      cmocka_unit_test(unknown_keys_are_rejected_at_every_level),
      cmocka_unit_test(duplicate_keys_are_rejected),
      cmocka_unit_test(wrong_types_are_rejected),
      cmocka_unit_test(non_integers_are_rejected),
      cmocka_unit_test(missing_required_keys_are_named),
      cmocka_unit_test(values_out_of_range_are_rejected),
      cmocka_unit_test(unknown_names_are_rejected),
      cmocka_unit_test(bad_custom_tableaux_are_rejected),
      cmocka_unit_test(unbuildable_pooling_chain_is_rejected),
      cmocka_unit_test(limits_are_reached_and_enforced),
      cmocka_unit_test(text_size_caps),
      cmocka_unit_test(round_trip_is_exact),
      cmocka_unit_test(written_doubles_read_back_exactly),
      cmocka_unit_test(truncated_specs_fail_cleanly),
      cmocka_unit_test(mutated_specs_fail_cleanly),
      cmocka_unit_test(allocation_failures_are_clean),
      cmocka_unit_test(bad_arguments),
      cmocka_unit_test(shipped_specs_parse),
      cmocka_unit_test(adaptive_keys_are_read_with_defaults),
      cmocka_unit_test(adaptive_errors_name_the_key),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
