/*
 * memload: a memory workload for the yunstack tiny guest.
 *
 *   memload --mib N [--pattern zero|same|random|seeded] [--seed S]
 *           [--touch-mib-per-s R] [--seconds T] [--report-every S]
 *           [--cache-mib C [--cache-path P] [--cache-offset-mib O]]
 *
 * Allocates N MiB, fills every 4 KiB page with the pattern, then re-touches
 * the pages 1 MiB at a time, cycling through the whole allocation, at R MiB/s
 * for T seconds (T = 0: until SIGTERM/SIGINT).
 *
 * Patterns, chosen for what the host can do with the memory:
 *   zero    all bytes zero (host KSM can merge them with the zero page)
 *   same    every page holds the same non-zero bytes (KSM merges them all)
 *   seeded  pseudo-random per page, derived from --seed and the page index:
 *           unique inside one guest, identical across guests with the same
 *           seed (KSM merges across guests only)
 *   random  unique everywhere, and changed again on every touch
 *
 * A touch reads and writes one 8-byte word per page, which is enough to fault
 * the page back in and dirty it (breaking a KSM merge, a balloon free page
 * report or a swap-out on the host); apart from `random` the written word is
 * the one already there, so the pattern survives.  The time to touch each
 * 1 MiB is measured, so a benchmark can compare p50/p95 against an unloaded
 * host to get the slowdown.
 *
 * Output, one line each, on stdout:
 *   MEMLOAD-FILLED mib=N pattern=P fill_s=F
 *   MEMLOAD mib=N touched=MiB rate=MiB/s elapsed=s p50_us=x p95_us=y
 *       every --report-every seconds (default 1; 0 = none), rate and
 *       percentiles over that interval, touched counts since the fill
 *   MEMLOAD-DONE mib=N touched=MiB rate=MiB/s elapsed=s p50_us=x p95_us=y
 *       fill_s=F, over the whole run
 *
 * --cache-mib C first writes C MiB of `seeded` pages (unique to --seed) to
 * P (default /dev/vda) at offset O MiB (default 64) and fsyncs it: the guest
 * then holds C MiB of clean page cache that it can drop at once, which is
 * what a balloon takes back first.  It prints
 *   MEMLOAD-CACHED mib=C path=P write_s=F
 * before the allocation.
 *
 * --touch-mib-per-s defaults to N (the whole allocation once a second);
 * 0 means as fast as possible.  Exit status: 0 on success, 1 if the memory
 * cannot be allocated, 2 on a usage error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096u
#define MIB (1024u * 1024u)
#define WORDS_PER_PAGE (PAGE / sizeof(uint64_t))
#define PAGES_PER_MIB (MIB / PAGE)

enum pattern { ZERO, SAME, SEEDED, RANDOM };
static const char *const pattern_names[] = {"zero", "same", "seeded", "random"};

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

/* splitmix64: a tiny PRNG whose output depends only on its state, which is
 * what makes `seeded` pages identical across guests. */
static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sleep_ns(uint64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000ull), (long)(ns % 1000000000ull)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR && !stop)
        ;
}

/*
 * Latency histogram with 16 linear buckets per power of two (about 6 %
 * resolution): constant memory however long the run, unlike keeping every
 * sample.
 */
#define HIST_BUCKETS (64 * 16)
struct hist {
    uint64_t count[HIST_BUCKETS];
    uint64_t total;
};

static unsigned bucket_of(uint64_t ns)
{
    if (ns < 16)
        return (unsigned)ns;
    unsigned msb = 63u - (unsigned)__builtin_clzll(ns);
    return (msb - 3u) * 16u + (unsigned)((ns >> (msb - 4u)) & 15u);
}

static uint64_t bucket_low(unsigned b)
{
    if (b < 16)
        return b;
    unsigned msb = b / 16u + 3u;
    return (1ull << msb) | ((uint64_t)(b % 16u) << (msb - 4u));
}

static void hist_add(struct hist *h, uint64_t ns)
{
    h->count[bucket_of(ns)]++;
    h->total++;
}

/* The q-quantile in microseconds (middle of its bucket). */
static double hist_quantile_us(const struct hist *h, double q)
{
    if (h->total == 0)
        return 0.0;
    uint64_t want = (uint64_t)(q * (double)(h->total - 1)) + 1, seen = 0;
    for (unsigned b = 0; b < HIST_BUCKETS; b++) {
        seen += h->count[b];
        if (seen >= want) {
            double low = (double)bucket_low(b);
            double high = b + 1 < HIST_BUCKETS ? (double)bucket_low(b + 1) : low;
            return (low + high) / 2.0 / 1000.0;
        }
    }
    return 0.0;
}

static void usage(FILE *out)
{
    fputs("usage: memload --mib N [--pattern zero|same|random|seeded] [--seed S]\n"
          "               [--touch-mib-per-s R] [--seconds T] [--report-every S]\n"
          "               [--cache-mib C [--cache-path P] [--cache-offset-mib O]]\n",
          out);
}

static double parse_number(const char *opt, const char *text)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno != 0 || end == text || *end != '\0' || v < 0) {
        fprintf(stderr, "memload: %s needs a non-negative number, got '%s'\n", opt, text);
        exit(2);
    }
    return v;
}

static void fill(unsigned char *mem, size_t pages, enum pattern p, uint64_t seed)
{
    static uint64_t same_page[WORDS_PER_PAGE];
    uint64_t state = 0x59554e5354414b21ull; /* fixed, so `same` matches across guests too */
    for (size_t w = 0; w < WORDS_PER_PAGE; w++)
        same_page[w] = splitmix64(&state);

    for (size_t i = 0; i < pages; i++) {
        uint64_t *page = (uint64_t *)(mem + i * PAGE);
        switch (p) {
        case ZERO:
            memset(page, 0, PAGE);
            break;
        case SAME:
            memcpy(page, same_page, PAGE);
            break;
        case SEEDED:
        case RANDOM:
            state = seed ^ (i * 0xd1342543de82ef95ull);
            for (size_t w = 0; w < WORDS_PER_PAGE; w++)
                page[w] = splitmix64(&state);
            break;
        }
    }
}

/* Write `mib` MiB of seeded pages to `path` at `offset_mib` and fsync: clean page cache.  Returns
 * the open descriptor (or -1). */
static int write_cache(const char *path, size_t mib, size_t offset_mib, uint64_t seed)
{
    static unsigned char buf[MIB];
    int fd = open(path, O_WRONLY);
    if (fd < 0) {
        fprintf(stderr, "memload: cannot open %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (lseek(fd, (off_t)offset_mib * MIB, SEEK_SET) < 0) {
        fprintf(stderr, "memload: cannot seek %s: %s\n", path, strerror(errno));
        close(fd);
        return -1;
    }
    for (size_t m = 0; m < mib; m++) {
        fill(buf, PAGES_PER_MIB, SEEDED, seed ^ ((uint64_t)(m + 1) << 40));
        for (size_t done = 0; done < MIB;) {
            ssize_t n = write(fd, buf + done, MIB - done);
            if (n <= 0) {
                fprintf(stderr, "memload: writing %s: %s\n", path, strerror(errno));
                close(fd);
                return -1;
            }
            done += (size_t)n;
        }
    }
    if (fsync(fd) != 0) {
        fprintf(stderr, "memload: fsync %s: %s\n", path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd; /* kept open: the last close of a block device drops its page cache */
}

int main(int argc, char **argv)
{
    double mib_arg = -1, rate = -1, seconds = 0, report_every = 1, cache_mib = 0, cache_offset = 64;
    const char *cache_path = "/dev/vda";
    enum pattern pattern = SAME;
    uint64_t seed = 1;
    int have_seed = 0;

    for (int i = 1; i < argc; i++) {
        const char *opt = argv[i];
        if (strcmp(opt, "-h") == 0 || strcmp(opt, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            usage(stderr);
            return 2;
        }
        const char *val = argv[++i];
        if (strcmp(opt, "--mib") == 0) {
            mib_arg = parse_number(opt, val);
        } else if (strcmp(opt, "--pattern") == 0) {
            int found = 0;
            for (int p = ZERO; p <= RANDOM; p++)
                if (strcmp(val, pattern_names[p]) == 0) {
                    pattern = (enum pattern)p;
                    found = 1;
                }
            if (!found) {
                usage(stderr);
                return 2;
            }
        } else if (strcmp(opt, "--seed") == 0) {
            seed = strtoull(val, NULL, 0);
            have_seed = 1;
        } else if (strcmp(opt, "--touch-mib-per-s") == 0) {
            rate = parse_number(opt, val);
        } else if (strcmp(opt, "--seconds") == 0) {
            seconds = parse_number(opt, val);
        } else if (strcmp(opt, "--report-every") == 0) {
            report_every = parse_number(opt, val);
        } else if (strcmp(opt, "--cache-mib") == 0) {
            cache_mib = parse_number(opt, val);
        } else if (strcmp(opt, "--cache-path") == 0) {
            cache_path = val;
        } else if (strcmp(opt, "--cache-offset-mib") == 0) {
            cache_offset = parse_number(opt, val);
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (mib_arg < 1) {
        usage(stderr);
        return 2;
    }
    size_t mib = (size_t)mib_arg;
    if (rate < 0)
        rate = (double)mib;
    if (pattern == RANDOM && !have_seed)
        seed = now_ns() ^ ((uint64_t)getpid() << 32);

    /* Reports go to the serial console or a pipe; either way they must
     * appear as they happen, not when a buffer fills. */
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    if (cache_mib >= 1) {
        uint64_t c0 = now_ns();
        if (write_cache(cache_path, (size_t)cache_mib, (size_t)cache_offset, seed) < 0)
            return 1;
        printf("MEMLOAD-CACHED mib=%zu path=%s write_s=%.3f\n", (size_t)cache_mib, cache_path,
               (double)(now_ns() - c0) / 1e9);
    }

    size_t pages = mib * PAGES_PER_MIB;
    unsigned char *mem = mmap(NULL, mib * MIB, PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        fprintf(stderr, "memload: cannot map %zu MiB: %s\n", mib, strerror(errno));
        return 1;
    }

    uint64_t t0 = now_ns();
    fill(mem, pages, pattern, seed);
    uint64_t start = now_ns();
    double fill_s = (double)(start - t0) / 1e9;
    printf("MEMLOAD-FILLED mib=%zu pattern=%s fill_s=%.3f\n", mib, pattern_names[pattern], fill_s);

    static struct hist all, interval;
    uint64_t end = seconds > 0 ? start + (uint64_t)(seconds * 1e9) : UINT64_MAX;
    uint64_t report_ns = (uint64_t)(report_every * 1e9);
    uint64_t next_report = report_ns ? start + report_ns : UINT64_MAX;
    uint64_t touched = 0, interval_touched = 0, interval_start = start;
    uint64_t random_state = seed ^ 0x5bd1e995ull;
    size_t chunk = 0;

    for (;;) {
        uint64_t now = now_ns();
        if (stop || now >= end)
            break;
        if (now >= next_report) {
            double dt = (double)(now - interval_start) / 1e9;
            printf("MEMLOAD mib=%zu touched=%llu rate=%.1f elapsed=%.3f p50_us=%.1f p95_us=%.1f\n",
                   mib, (unsigned long long)touched, dt > 0 ? (double)interval_touched / dt : 0.0,
                   (double)(now - start) / 1e9, hist_quantile_us(&interval, 0.50),
                   hist_quantile_us(&interval, 0.95));
            memset(&interval, 0, sizeof interval);
            interval_touched = 0;
            interval_start = now;
            next_report += report_ns;
            continue;
        }
        if (rate > 0) {
            /* Pace against the start rather than the last touch, so that a
             * slow touch is caught up on instead of lowering the rate. */
            uint64_t due = start + (uint64_t)((double)touched / rate * 1e9);
            if (due > now) {
                uint64_t wake = due < next_report ? due : next_report;
                sleep_ns((wake < end ? wake : end) - now);
                continue;
            }
        }

        uint64_t t = now_ns();
        volatile uint64_t *base = (volatile uint64_t *)(mem + chunk * MIB);
        for (size_t pg = 0; pg < PAGES_PER_MIB; pg++) {
            volatile uint64_t *word = base + pg * WORDS_PER_PAGE;
            *word = pattern == RANDOM ? splitmix64(&random_state) : *word;
        }
        uint64_t took = now_ns() - t;
        hist_add(&all, took);
        hist_add(&interval, took);
        touched++;
        interval_touched++;
        chunk = (chunk + 1) % mib;
    }

    double elapsed = (double)(now_ns() - start) / 1e9;
    printf("MEMLOAD-DONE mib=%zu touched=%llu rate=%.1f elapsed=%.3f p50_us=%.1f p95_us=%.1f fill_s=%.3f\n",
           mib, (unsigned long long)touched, elapsed > 0 ? (double)touched / elapsed : 0.0, elapsed,
           hist_quantile_us(&all, 0.50), hist_quantile_us(&all, 0.95), fill_s);
    munmap(mem, mib * MIB);
    return 0;
}
