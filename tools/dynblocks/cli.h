/* The command-line tool's shared pieces: flag parsing and context set-up. */
#ifndef DYNB_TOOLS_CLI_H
#define DYNB_TOOLS_CLI_H

#include <stdbool.h>
#include <stdio.h>

#include "options.h"

/* Prints the help (to stdout) or the error (to stderr) an options parser
 * returned; the exit code for it (0 after help, 2 after an error), or -1
 * when the command goes on. */
int cli_report(const cli_command *c, cli_result r, const char *err);
/* A context on --device / DYNBLOCKS_DEVICE with the tuning cache of
 * cli_tune_cache(); prints the error and returns NULL on failure. */
dynb_ctx *cli_context(const char *cmd, const char *device);
/* The same with the tuning cache `tune_cache` (NULL: the library's
 * default, "": none); `plain`: CLBlast's own parameters, no cache. */
dynb_ctx *cli_context_ex(const char *cmd, const char *device, const char *tune_cache, bool plain);
/* DYNBLOCKS_TUNE_CACHE, or NULL when unset or empty. */
const char *cli_tune_cache(void);
/* Reads and parses a spec file; prints the error and returns false. */
bool cli_read_spec(const char *cmd, const char *path, dynb__net_spec *spec);
/* Prints "dynblocks CMD: <ctx's last error>" and returns 1. */
int cli_fail(const char *cmd, dynb_ctx *ctx);
/* Reads a whole text file (for specs); NULL with a message on failure. */
char *cli_read_text(const char *cmd, const char *path, size_t *len);

int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_predict(int argc, char **argv);
int cmd_grad(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_fold(int argc, char **argv);
int cmd_refine(int argc, char **argv);
int cmd_tune(int argc, char **argv);
int cmd_selftest(int argc, char **argv);

/* Prints the profile tables (by family, layer and kernel) of n samples
 * taken over `steps` training steps that took `wall` seconds; returns the
 * samples' summed device seconds. */
double cli_print_profile(const dynb__prof_sample *s, size_t n, long steps, double wall);

/* Writes the per-epoch curves (loss and accuracy, train and validation) as
 * an SVG file. */
bool cli_plot_svg(const char *path, const dynb_epoch_row *rows, int n);

/* Training across MPI ranks (ranks.c; stubs in a build without MPI).
 * Whether this build has MPI. */
bool cli_ranks_available(void);
/* MPI_Init; this process's rank, its rank on its node; returns the number
 * of ranks. */
int cli_ranks_start(int *rank, int *local_rank);
/* ctx joins MPI_COMM_WORLD; prints the error and returns false. */
bool cli_ranks_join(const char *cmd, dynb_ctx *ctx);
/* The ranks compare hashes of their flags (but the device choice), their
 * network's values and their data; false (rank 0 prints which rank and
 * what differs) when any differs or a rank failed. Collective. */
bool cli_ranks_same(const char *cmd, dynb_ctx *ctx, int argc, char **argv, dynb__net *net,
                    const dynb__dataset *const *sets, int nsets);
/* This rank failed before training: the others, waiting in a collective,
 * fail too, naming it (`why`). */
void cli_ranks_abort(dynb_ctx *ctx, const char *why);
/* The test set split over the ranks as validation is (SPEC §2.1): rank
 * 0's best model (`best`, NULL on the other ranks or when rank 0 could not
 * load it) broadcast, each rank evaluating its contiguous part in
 * proportion to shard[rank] on a network shaped as `shape`, the losses and
 * correct counts summed in rank order. Collective; the error on ctx. */
dynb_status cli_ranks_test(dynb_ctx *ctx, dynb__net *shape, dynb__net *best,
                           const int64_t *shard, const dynb__dataset *test, double *loss,
                           double *acc);
/* MPI_Abort of every rank: the last resort, where no collective waits. */
void cli_ranks_fatal(void);
/* MPI_Finalize, once. */
void cli_ranks_end(void);

#endif
