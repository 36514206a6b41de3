/*
 * ws_load.c: the WebSocket load clients of bench/server_load.sh, in C.
 *
 *   ws_load [clients] --url ws://HOST:PORT/PATH --clients N --ready FILE --jobs FILE --out FILE
 *           [--connect-timeout S=30] [--jobs-timeout S=600] [--finish-timeout S=30]
 *
 * Why: bench/ws_load.py (Python, asyncio, `websockets`) burns 1.4 to 1.7 CPU seconds per run for
 * 1,000 clients. On a 2-core machine that CPU is taken from the server and the flash being
 * measured, which inflates the throughput loss and the latencies the bench reports. This is a
 * drop-in replacement for `ws_load.py clients` that costs a small fraction of that (about 0.2 s):
 * one process, one thread, epoll, non-blocking sockets, no JSON library.
 *
 * What it does, exactly as ws_load.py does:
 * - opens N connections to --url, at most 50 handshakes at once (RFC 6455 client handshake with a
 *   random Sec-WebSocket-Key; the 101 status and Sec-WebSocket-Accept are checked; no extension is
 *   offered, so no permessage-deflate), each within --connect-timeout;
 * - writes "ready N X.XXs" to --ready (atomically) once all are open, or "failed K of N: ..." and
 *   exits 1 if any could not connect;
 * - for every text (or binary) message, fragmented or not: receive time in ms since the epoch
 *   (CLOCK_REALTIME) minus the message's "timestamp"; counts by "type"; the jobs ("jobId") whose
 *   flash_started / flash_completed / flash_failed it saw; the last flash_progress "progress" per
 *   job. Pings are answered with a pong, a close from the server with a close, and the reason the
 *   connection ended early is kept;
 * - waits for --jobs (job ids, one per line, written by the driver once the jobs are over), then
 *   until every client has seen every listed job end or has been closed (or --finish-timeout),
 *   closes every connection (close frame, code 1000) and writes the JSON of ws_load.py's `result`
 *   to --out (FILE.tmp, then rename), for `ws_load.py report`.
 *
 * Build: gcc -O2 -Wall -Wextra -o ws_load bench/ws_load.c  (C11, glibc, nothing else)
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum {
    MAX_HANDSHAKES = 50,        /* connections opened at once, as ws_load.py's semaphore */
    MAX_MESSAGE = 1 << 20,      /* ws_load.py's max_size */
    MAX_RESPONSE_HEAD = 16384,  /* bytes of HTTP response head we accept */
    CLOSE_TIMEOUT_S = 5,        /* ws_load.py's close_timeout */
};

/* ------------------------------------------------------------------------------------------ */
/* small helpers */

static void die(const char *format, ...)
{
    va_list args;
    va_start(args, format);
    fputs("ws_load: ", stderr);
    vfprintf(stderr, format, args);
    fputc('\n', stderr);
    va_end(args);
    exit(2);
}

static void *xrealloc(void *p, size_t size)
{
    p = realloc(p, size ? size : 1);
    if (!p)
        die("out of memory");
    return p;
}

static char *xstrdup(const char *s)
{
    char *copy = strdup(s);
    if (!copy)
        die("out of memory");
    return copy;
}

static double clock_seconds(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double monotonic(void) { return clock_seconds(CLOCK_MONOTONIC); }

/* Wall-clock time in ms since the epoch, as the server's "timestamp". */
static double epoch_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

/* User + system CPU time of this process, as Python's sum(os.times()[:2]). */
static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6
         + (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* A growable byte buffer. */
struct buf {
    unsigned char *p;
    size_t len, cap;
};

static void buf_reserve(struct buf *b, size_t cap)
{
    if (b->cap >= cap)
        return;
    size_t n = b->cap ? b->cap : 1024;
    while (n < cap)
        n *= 2;
    b->p = xrealloc(b->p, n);
    b->cap = n;
}

static void buf_append(struct buf *b, const void *data, size_t n)
{
    buf_reserve(b, b->len + n);
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

/* Drops the first n bytes. */
static void buf_consume(struct buf *b, size_t n)
{
    memmove(b->p, b->p + n, b->len - n);
    b->len -= n;
}

/* Interned strings (message types, job ids): an index stands for the string. */
struct names {
    char **name;
    size_t count, cap;
};

static int intern(struct names *t, const char *s)
{
    for (size_t i = 0; i < t->count; i++)
        if (strcmp(t->name[i], s) == 0)
            return (int)i;
    if (t->count == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 16;
        t->name = xrealloc(t->name, t->cap * sizeof *t->name);
    }
    t->name[t->count] = xstrdup(s);
    return (int)t->count++;
}

/* ------------------------------------------------------------------------------------------ */
/* randomness, SHA-1, base64: just what the handshake and the frame masks need */

static uint64_t rng_state;

static void random_bytes(void *out, size_t n)
{
    if (getrandom(out, n, 0) != (ssize_t)n)
        die("getrandom: %s", strerror(errno));
}

/* xorshift64*: frame masks only need to be unpredictable to proxies, not secret. */
static uint32_t random_u32(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545F4914F6CDD1DULL) >> 32);
}

static uint32_t rol32(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

static void sha1_block(uint32_t h[5], const unsigned char *p)
{
    uint32_t w[80];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 80; i++)
        w[i] = rol32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) {
            f = (b & c) | (~b & d), k = 0x5A827999;
        } else if (i < 40) {
            f = b ^ c ^ d, k = 0x6ED9EBA1;
        } else if (i < 60) {
            f = (b & c) | (b & d) | (c & d), k = 0x8F1BBCDC;
        } else {
            f = b ^ c ^ d, k = 0xCA62C1D6;
        }
        uint32_t t = rol32(a, 5) + f + e + k + w[i];
        e = d, d = c, c = rol32(b, 30), b = a, a = t;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e;
}

static void sha1(const void *data, size_t n, unsigned char digest[20])
{
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    const unsigned char *p = data;
    size_t full = n / 64 * 64;
    for (size_t i = 0; i < full; i += 64)
        sha1_block(h, p + i);
    /* The tail, 0x80, zeros and the length in bits: one or two more blocks. */
    unsigned char last[128] = {0};
    size_t tail = n - full, blocks = tail < 56 ? 1 : 2;
    memcpy(last, p + full, tail);
    last[tail] = 0x80;
    uint64_t bits = (uint64_t)n * 8;
    for (size_t i = 0; i < 8; i++)
        last[blocks * 64 - 1 - i] = (unsigned char)(bits >> (8 * i));
    for (size_t i = 0; i < blocks; i++)
        sha1_block(h, last + 64 * i);
    for (int i = 0; i < 20; i++)
        digest[i] = (unsigned char)(h[i / 4] >> (24 - 8 * (i % 4)));
}

/* Base64 of n bytes into out (4 * ceil(n / 3) + 1 bytes, NUL-terminated). */
static void base64(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) | (i + 2 < n ? in[i + 2] : 0);
        *out++ = digits[v >> 18 & 63];
        *out++ = digits[v >> 12 & 63];
        *out++ = i + 1 < n ? digits[v >> 6 & 63] : '=';
        *out++ = i + 2 < n ? digits[v & 63] : '=';
    }
    *out = '\0';
}

/* Sec-WebSocket-Accept for a key (RFC 6455, 4.2.2): base64(SHA-1(key + GUID)). */
static void websocket_accept(const char *key, char accept[29])
{
    char text[64];
    unsigned char digest[20];
    snprintf(text, sizeof text, "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", key);
    sha1(text, strlen(text), digest);
    base64(digest, 20, accept);
}

/* ------------------------------------------------------------------------------------------ */
/* minimal JSON: the top-level "type", "timestamp", "jobId" and "progress" of one object */

struct fields {
    char type[64];
    char job[256];
    bool has_type, has_job, has_timestamp, has_progress;
    double timestamp, progress;
};

static const unsigned char *skip_space(const unsigned char *p, const unsigned char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

static void put_utf8(char *out, size_t cap, size_t *len, uint32_t c)
{
    unsigned char b[4];
    int n;
    if (c < 0x80) {
        b[0] = (unsigned char)c, n = 1;
    } else if (c < 0x800) {
        b[0] = (unsigned char)(0xC0 | c >> 6), b[1] = (unsigned char)(0x80 | (c & 63)), n = 2;
    } else if (c < 0x10000) {
        b[0] = (unsigned char)(0xE0 | c >> 12), b[1] = (unsigned char)(0x80 | (c >> 6 & 63));
        b[2] = (unsigned char)(0x80 | (c & 63)), n = 3;
    } else {
        b[0] = (unsigned char)(0xF0 | c >> 18), b[1] = (unsigned char)(0x80 | (c >> 12 & 63));
        b[2] = (unsigned char)(0x80 | (c >> 6 & 63)), b[3] = (unsigned char)(0x80 | (c & 63)), n = 4;
    }
    for (int i = 0; i < n; i++, (*len)++)
        if (out && *len + 1 < cap)
            out[*len] = (char)b[i];
}

static bool hex4(const unsigned char *p, const unsigned char *end, uint32_t *v)
{
    *v = 0;
    if (end - p < 4)
        return false;
    for (int i = 0; i < 4; i++) {
        int c = p[i], d = isdigit(c) ? c - '0' : (c | 32) >= 'a' && (c | 32) <= 'f' ? (c | 32) - 'a' + 10 : -1;
        if (d < 0)
            return false;
        *v = *v << 4 | (uint32_t)d;
    }
    return true;
}

/* A JSON string at p (on its opening quote). Decodes it into out (cap bytes, NUL-terminated,
 * cut short if need be; *full_len says how long it really is) unless out is NULL. Returns the
 * position after the closing quote, or NULL if it is not a valid string. */
static const unsigned char *json_string(const unsigned char *p, const unsigned char *end, char *out, size_t cap,
                                        size_t *full_len)
{
    size_t len = 0;
    for (p++; p < end && *p != '"'; p++) {
        uint32_t c = *p;
        if (c < 0x20)
            return NULL;
        if (c == '\\') {
            if (++p == end)
                return NULL;
            switch (*p) {
            case '"': case '\\': case '/': c = *p; break;
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case 'n': c = '\n'; break;
            case 'r': c = '\r'; break;
            case 't': c = '\t'; break;
            case 'u': {
                uint32_t low;
                if (!hex4(p + 1, end, &c))
                    return NULL;
                p += 4;
                if (c >= 0xD800 && c < 0xDC00 && end - p > 2 && p[1] == '\\' && p[2] == 'u' && hex4(p + 3, end, &low)
                    && low >= 0xDC00 && low < 0xE000) {
                    c = 0x10000 + ((c - 0xD800) << 10) + (low - 0xDC00);
                    p += 6;
                }
                break;
            }
            default: return NULL;
            }
            put_utf8(out, cap, &len, c);
        } else {
            if (out && len + 1 < cap)
                out[len] = (char)c;
            len++;
        }
    }
    if (p == end)
        return NULL;
    if (out && cap)
        out[len < cap ? len : cap - 1] = '\0';
    if (full_len)
        *full_len = len;
    return p + 1;
}

/* A JSON number at p; its value in *value. Returns the position after it, or NULL. */
static const unsigned char *json_number(const unsigned char *p, const unsigned char *end, double *value)
{
    const unsigned char *start = p;
    if (p < end && *p == '-')
        p++;
    if (p == end || !isdigit(*p))
        return NULL;
    if (*p == '0')
        p++;
    else
        while (p < end && isdigit(*p))
            p++;
    if (p < end && *p == '.') {
        if (++p == end || !isdigit(*p))
            return NULL;
        while (p < end && isdigit(*p))
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        if (++p < end && (*p == '+' || *p == '-'))
            p++;
        if (p == end || !isdigit(*p))
            return NULL;
        while (p < end && isdigit(*p))
            p++;
    }
    char text[64];
    size_t n = (size_t)(p - start);
    if (n >= sizeof text)
        return NULL;
    memcpy(text, start, n);
    text[n] = '\0';
    *value = strtod(text, NULL);
    return p;
}

/* Skips any JSON value at p. Returns the position after it, or NULL if it is not valid. */
static const unsigned char *json_skip(const unsigned char *p, const unsigned char *end, int depth)
{
    double ignored;
    if (p == end || depth > 64)
        return NULL;
    switch (*p) {
    case '"':
        return json_string(p, end, NULL, 0, NULL);
    case '{':
    case '[': {
        unsigned char close = *p == '{' ? '}' : ']';
        p = skip_space(p + 1, end);
        if (p < end && *p == close)
            return p + 1;
        for (;;) {
            if (close == '}') {
                if (p == end || *p != '"' || !(p = json_string(p, end, NULL, 0, NULL)))
                    return NULL;
                p = skip_space(p, end);
                if (p == end || *p != ':')
                    return NULL;
                p = skip_space(p + 1, end);
            }
            if (!(p = json_skip(p, end, depth + 1)))
                return NULL;
            p = skip_space(p, end);
            if (p < end && *p == ',')
                p = skip_space(p + 1, end);
            else if (p < end && *p == close)
                return p + 1;
            else
                return NULL;
        }
    }
    case 't':
        return end - p >= 4 && memcmp(p, "true", 4) == 0 ? p + 4 : NULL;
    case 'f':
        return end - p >= 5 && memcmp(p, "false", 5) == 0 ? p + 5 : NULL;
    case 'n':
        return end - p >= 4 && memcmp(p, "null", 4) == 0 ? p + 4 : NULL;
    default:
        return json_number(p, end, &ignored);
    }
}

/* A string field's value in out (has: whether it is a string), and the position after it. */
static const unsigned char *string_field(const unsigned char *p, const unsigned char *end, char *out, size_t cap,
                                         bool *has)
{
    *has = *p == '"';
    return *has ? json_string(p, end, out, cap, NULL) : json_skip(p, end, 1);
}

/* A number field's value in *value (has: whether it is a number), and the position after it. */
static const unsigned char *number_field(const unsigned char *p, const unsigned char *end, double *value, bool *has)
{
    const unsigned char *after = *p == '"' ? NULL : json_number(p, end, value);
    *has = after != NULL;
    return after ? after : json_skip(p, end, 1);
}

/* One value of the top-level object: kept in f if it is one of the four fields we want. */
static const unsigned char *json_field(const char *key, const unsigned char *p, const unsigned char *end,
                                       struct fields *f)
{
    if (strcmp(key, "type") == 0)
        return string_field(p, end, f->type, sizeof f->type, &f->has_type);
    if (strcmp(key, "jobId") == 0)
        return string_field(p, end, f->job, sizeof f->job, &f->has_job);
    if (strcmp(key, "timestamp") == 0)
        return number_field(p, end, &f->timestamp, &f->has_timestamp);
    if (strcmp(key, "progress") == 0)
        return number_field(p, end, &f->progress, &f->has_progress);
    return json_skip(p, end, 1);
}

/* Parses one message, which must be a JSON object. False if it is not. */
static bool parse_message(const unsigned char *p, size_t n, struct fields *f)
{
    const unsigned char *end = p + n;
    f->has_type = f->has_job = f->has_timestamp = f->has_progress = false;
    p = skip_space(p, end);
    if (p == end || *p != '{')
        return false;
    p = skip_space(p + 1, end);
    if (p < end && *p == '}')
        return skip_space(p + 1, end) == end;
    for (;;) {
        char key[16];
        size_t key_len;
        if (p == end || *p != '"' || !(p = json_string(p, end, key, sizeof key, &key_len)))
            return false;
        if (key_len >= sizeof key)
            key[0] = '\0'; /* too long to be one of ours */
        p = skip_space(p, end);
        if (p == end || *p != ':')
            return false;
        p = skip_space(p + 1, end);
        if (p == end || !(p = json_field(key, p, end, f)))
            return false;
        p = skip_space(p, end);
        if (p < end && *p == ',')
            p = skip_space(p + 1, end);
        else if (p < end && *p == '}')
            return skip_space(p + 1, end) == end;
        else
            return false;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* clients and what they saw */

enum state { IDLE, CONNECTING, HANDSHAKE, OPEN, CLOSING, DONE };

struct sample {
    int kind;          /* index in `kinds` */
    double latency;    /* ms */
};

struct job_seen {
    int job;           /* index in `jobs` */
    bool started, completed, failed, has_progress;
    double progress;   /* the last flash_progress's "progress" (NaN if not a number) */
};

struct client {
    int fd;
    enum state state;
    uint32_t events;             /* registered with epoll */
    double deadline;             /* for the handshake, monotonic */
    char accept[29];             /* the Sec-WebSocket-Accept we expect */
    struct buf in, out;
    struct buf message;          /* a fragmented message being put together */
    int message_opcode;          /* its opcode, 0 if none */
    struct sample *samples;
    size_t sample_count, sample_cap;
    struct job_seen *seen;
    size_t seen_count, seen_cap;
    char *error;                 /* why it could not connect */
    char *closed;                /* why it ended before we closed it */
};

static struct {
    const char *url, *ready, *jobs, *out;
    int clients;
    double connect_timeout, jobs_timeout, finish_timeout;
} opt = {.connect_timeout = 30, .jobs_timeout = 600, .finish_timeout = 30};

static struct {
    char host[256], port[16], path[1024], host_header[300];
    struct addrinfo *address;
} target;

static struct client *clients;
static int epoll_fd;
static int handshakes_in_flight;
static bool stopping;             /* we are closing: the server's closes are ours */
static struct names kinds, jobs;  /* message types and job ids seen */
static size_t *kind_counts;       /* messages per kind */
static int kind_started, kind_progress, kind_completed, kind_failed;
static int no_job;                /* the "job" of messages without a string jobId */

static int kind_of(const char *type)
{
    size_t before = kinds.count;
    int kind = intern(&kinds, type);
    if (kinds.count > before) {
        kind_counts = xrealloc(kind_counts, kinds.count * sizeof *kind_counts);
        kind_counts[kind] = 0;
    }
    return kind;
}

static struct job_seen *job_seen(struct client *c, int job)
{
    for (size_t i = 0; i < c->seen_count; i++)
        if (c->seen[i].job == job)
            return &c->seen[i];
    if (c->seen_count == c->seen_cap) {
        c->seen_cap = c->seen_cap ? 2 * c->seen_cap : 8;
        c->seen = xrealloc(c->seen, c->seen_cap * sizeof *c->seen);
    }
    c->seen[c->seen_count] = (struct job_seen){.job = job};
    return &c->seen[c->seen_count++];
}

static void add_sample(struct client *c, int kind, double latency)
{
    if (c->sample_count == c->sample_cap) {
        c->sample_cap = c->sample_cap ? 2 * c->sample_cap : 64;
        c->samples = xrealloc(c->samples, c->sample_cap * sizeof *c->samples);
    }
    c->samples[c->sample_count++] = (struct sample){kind, latency};
}

/* Python's repr() of a str, near enough: 'text', or "text" if it has a ' and no ". */
static void python_repr(char *out, size_t cap, const unsigned char *s, size_t n)
{
    bool single = memchr(s, '\'', n) && !memchr(s, '"', n);
    char quote = single ? '"' : '\'';
    size_t len = 0;
    out[len++] = quote;
    for (size_t i = 0; i < n && len + 4 < cap; i++) {
        if (s[i] == '\\' || s[i] == quote)
            out[len++] = '\\';
        out[len++] = (char)s[i];
    }
    out[len++] = quote;
    out[len] = '\0';
}

/* ------------------------------------------------------------------------------------------ */
/* sockets */

static void watch(struct client *c, uint32_t events)
{
    if (c->events == events)
        return;
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(epoll_fd, c->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd, &ev) < 0)
        die("epoll_ctl: %s", strerror(errno));
    c->events = events;
}

/* Ends the connection for good (closing the socket also takes it out of epoll). */
static void finish(struct client *c)
{
    if (c->state == CONNECTING || c->state == HANDSHAKE)
        handshakes_in_flight--;
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->events = 0;
    c->state = DONE;
}

static void connect_failed(struct client *c, const char *why)
{
    c->error = xstrdup(why);
    finish(c);
}

/* The connection ended on the server's side (or broke): why, unless we were closing it. */
static void ended_early(struct client *c, const char *why)
{
    if (c->state == CONNECTING || c->state == HANDSHAKE) {
        connect_failed(c, why);
        return;
    }
    if (!stopping && c->state == OPEN && !c->closed)
        c->closed = xstrdup(why);
    finish(c);
}

/* Sends what is queued in c->out; what the socket does not take now waits for EPOLLOUT. */
static void flush(struct client *c)
{
    while (c->out.len) {
        ssize_t n = send(c->fd, c->out.p, c->out.len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n < 0) {
            char why[160];
            snprintf(why, sizeof why, "ConnectionClosed code=None reason='' (send: %s)", strerror(errno));
            ended_early(c, why);
            return;
        }
        buf_consume(&c->out, (size_t)n);
    }
    watch(c, EPOLLIN | (c->out.len ? EPOLLOUT : 0));
}

/* Queues one masked frame (as a client must send them) and sends it. */
static void send_frame(struct client *c, int opcode, const unsigned char *payload, size_t n)
{
    unsigned char head[14];
    size_t h = 0;
    head[h++] = (unsigned char)(0x80 | opcode);
    if (n < 126) {
        head[h++] = (unsigned char)(0x80 | n);
    } else {
        head[h++] = 0x80 | 126;
        head[h++] = (unsigned char)(n >> 8);
        head[h++] = (unsigned char)n;
    }
    uint32_t mask = random_u32();
    memcpy(head + h, &mask, 4);
    const unsigned char *key = head + h;
    h += 4;
    buf_reserve(&c->out, c->out.len + h + n);
    memcpy(c->out.p + c->out.len, head, h);
    for (size_t i = 0; i < n; i++)
        c->out.p[c->out.len + h + i] = payload[i] ^ key[i % 4];
    c->out.len += h + n;
    flush(c);
}

/* Sends a close frame with a status code (and no reason). code < 0: an empty close frame. */
static void send_close(struct client *c, int code)
{
    unsigned char payload[2] = {(unsigned char)(code >> 8), (unsigned char)code};
    send_frame(c, 0x8, payload, code < 0 ? 0 : 2);
}

/* A protocol error of the server's: we close with `code` and keep why. */
static void fail_connection(struct client *c, int code, const char *why)
{
    if (c->state == OPEN && c->fd >= 0)
        send_close(c, code);
    if (!stopping && !c->closed && c->state != DONE)
        c->closed = xstrdup(why);
    finish(c);
}

/* ------------------------------------------------------------------------------------------ */
/* connecting: TCP, then the opening handshake */

static void start_connect(struct client *c)
{
    struct addrinfo *a = target.address;
    c->fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    c->state = CONNECTING;
    c->deadline = monotonic() + opt.connect_timeout;
    handshakes_in_flight++;
    if (c->fd < 0) {
        char why[160];
        snprintf(why, sizeof why, "OSError: socket: %s", strerror(errno));
        connect_failed(c, why);
        return;
    }
    if (connect(c->fd, a->ai_addr, a->ai_addrlen) < 0 && errno != EINPROGRESS) {
        char why[160];
        snprintf(why, sizeof why, "OSError: connect: %s", strerror(errno));
        connect_failed(c, why);
        return;
    }
    watch(c, EPOLLOUT);
}

/* The TCP connection is up (or failed): send the HTTP upgrade request. */
static void send_handshake(struct client *c)
{
    int error = 0;
    socklen_t len = sizeof error;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &error, &len) < 0)
        error = errno;
    if (error) {
        char why[160];
        snprintf(why, sizeof why, "OSError: connect: %s", strerror(error));
        connect_failed(c, why);
        return;
    }
    unsigned char nonce[16];
    char key[25], request[1600];
    random_bytes(nonce, sizeof nonce);
    base64(nonce, sizeof nonce, key);
    websocket_accept(key, c->accept);
    int n = snprintf(request, sizeof request,
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nUser-Agent: flashctl-bench-ws_load.c\r\n\r\n",
                     target.path, target.host_header, key);
    c->state = HANDSHAKE;
    buf_append(&c->out, request, (size_t)n);
    flush(c);
}

/* The value of a response header (case-insensitive name), trimmed, in out; false if absent. */
static bool header(const char *head, const char *name, char *out, size_t cap)
{
    size_t name_len = strlen(name);
    for (const char *line = strstr(head, "\r\n"); line; line = strstr(line, "\r\n")) {
        line += 2;
        if (strncasecmp(line, name, name_len) != 0 || line[name_len] != ':')
            continue;
        const char *v = line + name_len + 1, *stop = strstr(v, "\r\n");
        while (*v == ' ' || *v == '\t')
            v++;
        size_t n = (size_t)(stop - v);
        while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
            n--;
        snprintf(out, cap, "%.*s", (int)n, v);
        return true;
    }
    return false;
}

/* Checks the server's response head (NUL-terminated, up to its blank line). NULL if it is a good
 * 101, else why not. */
static const char *check_response(const char *head, const char *accept, char *why, size_t cap)
{
    char value[256];
    int status = 0;
    if (sscanf(head, "HTTP/1.1 %d", &status) != 1) {
        snprintf(why, cap, "InvalidMessage: did not receive a valid HTTP response");
        return why;
    }
    if (status != 101) {
        snprintf(why, cap, "InvalidStatus: server rejected WebSocket connection: HTTP %d", status);
        return why;
    }
    if (!header(head, "Upgrade", value, sizeof value) || strcasecmp(value, "websocket") != 0)
        return "InvalidUpgrade: missing or invalid Upgrade header";
    if (!header(head, "Connection", value, sizeof value) || !strcasestr(value, "upgrade"))
        return "InvalidUpgrade: missing or invalid Connection header";
    if (!header(head, "Sec-WebSocket-Accept", value, sizeof value) || strcmp(value, accept) != 0)
        return "InvalidHeader: missing or invalid Sec-WebSocket-Accept header";
    if (header(head, "Sec-WebSocket-Extensions", value, sizeof value))
        return "NegotiationError: the server chose an extension we did not offer";
    if (header(head, "Sec-WebSocket-Protocol", value, sizeof value))
        return "NegotiationError: the server chose a subprotocol we did not offer";
    return NULL;
}

static void process_frames(struct client *c);

/* Bytes of the response have arrived: once its head is complete, check it and open. */
static void on_handshake_data(struct client *c)
{
    buf_reserve(&c->in, c->in.len + 1);
    c->in.p[c->in.len] = '\0';
    char *end = strstr((char *)c->in.p, "\r\n\r\n");
    if (!end) {
        if (c->in.len > MAX_RESPONSE_HEAD)
            connect_failed(c, "InvalidMessage: response head too long");
        return;
    }
    end[2] = '\0'; /* keep the last header's CRLF, cut the blank line */
    char why[160];
    const char *problem = check_response((char *)c->in.p, c->accept, why, sizeof why);
    if (problem) {
        connect_failed(c, problem);
        return;
    }
    buf_consume(&c->in, (size_t)(end + 4 - (char *)c->in.p));
    handshakes_in_flight--;
    c->state = OPEN;
    process_frames(c); /* frames may have come with the response */
}

/* ------------------------------------------------------------------------------------------ */
/* frames and messages */

static void on_message(struct client *c, const unsigned char *text, size_t n)
{
    double received = epoch_ms();
    struct fields f;
    if (!parse_message(text, n, &f)) {
        fail_connection(c, 1003, "JSONDecodeError: a message is not a JSON object");
        return;
    }
    int kind = f.has_type ? kind_of(f.type) : kind_of("?");
    kind_counts[kind]++;
    if (f.has_timestamp && isfinite(received - f.timestamp))
        add_sample(c, kind, received - f.timestamp);
    if (kind != kind_started && kind != kind_completed && kind != kind_failed && kind != kind_progress)
        return;
    struct job_seen *seen = job_seen(c, f.has_job ? intern(&jobs, f.job) : no_job);
    if (kind == kind_started) {
        seen->started = true;
    } else if (kind == kind_completed) {
        seen->completed = true;
    } else if (kind == kind_failed) {
        seen->failed = true;
    } else {
        seen->has_progress = true;
        seen->progress = f.has_progress ? f.progress : NAN;
    }
}

/* A close frame from the server: answer it (if it started the close) and end. */
static void on_close_frame(struct client *c, const unsigned char *payload, size_t n)
{
    if (n == 1) {
        fail_connection(c, 1002, "ProtocolError: close frame with a 1-byte payload");
        return;
    }
    int code = n >= 2 ? payload[0] << 8 | payload[1] : 1005;
    if (c->state == OPEN) {
        send_frame(c, 0x8, payload, n); /* the same code and reason back */
        char reason[200], why[260];
        python_repr(reason, sizeof reason, payload + 2, n >= 2 ? n - 2 : 0);
        /* As websockets: 1000, 1001 and "no status" end the iteration quietly, others raise. */
        if (code == 1000 || code == 1001 || code == 1005)
            snprintf(why, sizeof why, "closed by server code=%d reason=%s", code, reason);
        else
            snprintf(why, sizeof why, "ConnectionClosed code=%d reason=%s", code, reason);
        ended_early(c, why);
        return;
    }
    finish(c); /* the answer to our close */
}

static void on_frame(struct client *c, bool fin, int opcode, const unsigned char *payload, size_t n)
{
    if (opcode >= 0x8 && (!fin || n > 125)) {
        fail_connection(c, 1002, "ProtocolError: fragmented or long control frame");
        return;
    }
    switch (opcode) {
    case 0x8:
        on_close_frame(c, payload, n);
        return;
    case 0x9:
        if (c->state == OPEN)
            send_frame(c, 0xA, payload, n);
        return;
    case 0xA:
        return;
    case 0x1:
    case 0x2:
        if (c->message_opcode) {
            fail_connection(c, 1002, "ProtocolError: expected a continuation frame");
        } else if (fin) {
            on_message(c, payload, n);
        } else {
            c->message_opcode = opcode;
            c->message.len = 0;
            buf_append(&c->message, payload, n);
        }
        return;
    case 0x0:
        if (!c->message_opcode) {
            fail_connection(c, 1002, "ProtocolError: unexpected continuation frame");
            return;
        }
        if (c->message.len + n > MAX_MESSAGE) {
            fail_connection(c, 1009, "PayloadTooBig: message over 1 MiB");
            return;
        }
        buf_append(&c->message, payload, n);
        if (fin) {
            c->message_opcode = 0;
            on_message(c, c->message.p, c->message.len);
        }
        return;
    default:
        fail_connection(c, 1002, "ProtocolError: unknown opcode");
    }
}

/* Handles every complete frame in c->in and keeps the rest. */
static void process_frames(struct client *c)
{
    size_t pos = 0, need = 0;
    while (c->state == OPEN || c->state == CLOSING) {
        const unsigned char *p = c->in.p + pos;
        size_t avail = c->in.len - pos, head = 2;
        if (avail < 2)
            break;
        uint64_t n = p[1] & 0x7F;
        if (n == 126) {
            head = 4;
            if (avail >= head)
                n = (uint64_t)p[2] << 8 | p[3];
        } else if (n == 127) {
            head = 10;
            if (avail >= head) {
                n = 0;
                for (int i = 0; i < 8; i++)
                    n = n << 8 | p[2 + i];
            }
        }
        if (avail < head)
            break;
        if (p[1] & 0x80) {
            fail_connection(c, 1002, "ProtocolError: masked frame from the server");
            return;
        }
        if (p[0] & 0x70) {
            fail_connection(c, 1002, "ProtocolError: reserved bits set (no extension was negotiated)");
            return;
        }
        if (n > MAX_MESSAGE) {
            fail_connection(c, 1009, "PayloadTooBig: message over 1 MiB");
            return;
        }
        if (avail < head + n) {
            need = head + (size_t)n;
            break;
        }
        pos += head + (size_t)n;
        on_frame(c, p[0] & 0x80, p[0] & 0x0F, p + head, (size_t)n);
    }
    if (c->state != OPEN && c->state != CLOSING)
        return;
    buf_consume(&c->in, pos);
    buf_reserve(&c->in, need);
}

/* The socket is readable: one read (epoll is level-triggered, so the rest comes next time). */
static void on_readable(struct client *c)
{
    if (c->in.cap - c->in.len < 2048)
        buf_reserve(&c->in, c->in.len + 4096);
    ssize_t n = recv(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len - 1, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n <= 0) {
        char why[160];
        if (n == 0)
            snprintf(why, sizeof why, c->state == HANDSHAKE ? "InvalidMessage: connection closed during the handshake"
                                                            : "ConnectionClosed code=None reason=''");
        else
            snprintf(why, sizeof why, "ConnectionClosed code=None reason='' (recv: %s)", strerror(errno));
        ended_early(c, why);
        return;
    }
    c->in.len += (size_t)n;
    if (c->state == HANDSHAKE)
        on_handshake_data(c);
    else
        process_frames(c);
}

/* Waits up to timeout_ms for socket events and handles them. */
static void poll_once(int timeout_ms)
{
    struct epoll_event events[256];
    int n = epoll_wait(epoll_fd, events, 256, timeout_ms);
    if (n < 0 && errno != EINTR)
        die("epoll_wait: %s", strerror(errno));
    for (int i = 0; i < n; i++) {
        struct client *c = events[i].data.ptr;
        if (c->state == DONE)
            continue; /* ended earlier in this batch */
        if (c->state == CONNECTING) {
            send_handshake(c);
            continue;
        }
        if (events[i].events & EPOLLOUT)
            flush(c);
        if (c->state != DONE && events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
            on_readable(c);
    }
}

/* Handles socket events for `seconds`. */
static void poll_for(double seconds)
{
    double until = monotonic() + seconds;
    for (double left = seconds; left > 0; left = until - monotonic())
        poll_once((int)(left * 1000) + 1);
}

/* ------------------------------------------------------------------------------------------ */
/* the phases of a run */

/* Opens every connection, MAX_HANDSHAKES at a time. Returns how many failed. */
static int connect_all(void)
{
    int next = 0, failed = 0;
    while (next < opt.clients || handshakes_in_flight > 0) {
        while (handshakes_in_flight < MAX_HANDSHAKES && next < opt.clients)
            start_connect(&clients[next++]);
        poll_once(50);
        double now = monotonic();
        for (int i = 0; i < next; i++) {
            struct client *c = &clients[i];
            if ((c->state == CONNECTING || c->state == HANDSHAKE) && now > c->deadline)
                connect_failed(c, "TimeoutError: timed out during opening handshake");
        }
    }
    for (int i = 0; i < opt.clients; i++)
        failed += clients[i].error != NULL;
    return failed;
}

/* Sends a close to every open connection and waits (up to CLOSE_TIMEOUT_S) for the answers. */
static void close_all(void)
{
    stopping = true;
    for (int i = 0; i < opt.clients; i++) {
        struct client *c = &clients[i];
        if (c->state == OPEN) {
            c->state = CLOSING;
            send_close(c, 1000);
        } else if (c->state != DONE && c->state != CLOSING) {
            finish(c);
        }
    }
    double deadline = monotonic() + CLOSE_TIMEOUT_S;
    for (;;) {
        int closing = 0;
        for (int i = 0; i < opt.clients; i++)
            closing += clients[i].state == CLOSING;
        if (!closing || monotonic() > deadline)
            break;
        poll_once(50);
    }
    for (int i = 0; i < opt.clients; i++)
        if (clients[i].state != DONE)
            finish(&clients[i]);
}

static void write_atomically(const char *path, const char *text)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0 || rename(tmp, path) != 0)
        die("cannot write %s: %s", path, strerror(errno));
}

/* "failed K of N: 3x why; 1x other why" for the ready file. */
static void report_connect_errors(int failed)
{
    struct names whys = {0};
    size_t counts[64] = {0};
    for (int i = 0; i < opt.clients; i++)
        if (clients[i].error) {
            int k = intern(&whys, clients[i].error);
            if (k < 64)
                counts[k]++;
        }
    struct buf text = {0};
    char part[512];
    int n = snprintf(part, sizeof part, "failed %d of %d: ", failed, opt.clients);
    buf_append(&text, part, (size_t)n);
    for (size_t k = 0; k < whys.count && k < 64; k++) {
        n = snprintf(part, sizeof part, "%s%zux %s", k ? "; " : "", counts[k], whys.name[k]);
        buf_append(&text, part, (size_t)n < sizeof part ? (size_t)n : sizeof part - 1);
    }
    buf_append(&text, "\n", 2);
    write_atomically(opt.ready, (char *)text.p);
}

/* The listed jobs (indices in `jobs`), sorted by id, from the --jobs file. */
static int *listed;
static size_t listed_count;

static int by_job_name(const void *a, const void *b)
{
    return strcmp(jobs.name[*(const int *)a], jobs.name[*(const int *)b]);
}

static void read_jobs_file(void)
{
    FILE *f = fopen(opt.jobs, "r");
    if (!f)
        return;
    char line[1024];
    while (fgets(line, sizeof line, f)) {
        char *s = line, *e = line + strlen(line);
        while (*s && isspace((unsigned char)*s))
            s++;
        while (e > s && isspace((unsigned char)e[-1]))
            *--e = '\0';
        if (!*s)
            continue;
        int job = intern(&jobs, s);
        bool dup = false;
        for (size_t i = 0; i < listed_count; i++)
            dup |= listed[i] == job;
        if (dup)
            continue;
        listed = xrealloc(listed, (listed_count + 1) * sizeof *listed);
        listed[listed_count++] = job;
    }
    fclose(f);
    qsort(listed, listed_count, sizeof *listed, by_job_name);
}

/* Waits (handling events) for the driver's --jobs file, then reads it. */
static void wait_for_jobs(void)
{
    double deadline = monotonic() + opt.jobs_timeout;
    while (access(opt.jobs, F_OK) != 0) {
        if (monotonic() > deadline) {
            fprintf(stderr, "ws_load: no job list at %s after %gs\n", opt.jobs, opt.jobs_timeout);
            break;
        }
        poll_for(0.05);
    }
    read_jobs_file();
}

/* How many listed jobs the client has seen with `what` (0 started, 1 completed, 2 ended). */
static size_t jobs_seen(const struct client *c, int what)
{
    size_t count = 0;
    for (size_t i = 0; i < listed_count; i++)
        for (size_t k = 0; k < c->seen_count; k++) {
            const struct job_seen *s = &c->seen[k];
            if (s->job == listed[i]) {
                count += what == 0 ? s->started : what == 1 ? s->completed : s->completed || s->failed;
                break;
            }
        }
    return count;
}

/* Handles events until every client has seen every listed job end, or was closed, or the deadline. */
static void wait_for_endings(void)
{
    double deadline = monotonic() + opt.finish_timeout;
    int first_waiting = 0; /* clients before it are done waiting, for good */
    while (monotonic() < deadline) {
        while (first_waiting < opt.clients && (clients[first_waiting].closed
                                               || jobs_seen(&clients[first_waiting], 2) == listed_count))
            first_waiting++;
        if (first_waiting == opt.clients)
            break;
        poll_for(0.02);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* the result, as ws_load.py's `result` dict */

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

static void write_latencies(FILE *f)
{
    bool first_kind = true;
    fputs("\"latencies\": {", f);
    for (size_t k = 0; k < kinds.count; k++) {
        bool any = false;
        for (int i = 0; i < opt.clients; i++)
            for (size_t j = 0; j < clients[i].sample_count; j++) {
                if (clients[i].samples[j].kind != (int)k)
                    continue;
                if (!any) {
                    fputs(first_kind ? "" : ", ", f);
                    json_str(f, kinds.name[k]);
                    fputs(": [", f);
                    first_kind = false;
                }
                fprintf(f, "%s%.2f", any ? ", " : "", clients[i].samples[j].latency);
                any = true;
            }
        if (any)
            fputs("]", f);
    }
    fputs("}", f);
}

static void write_result(double connect_seconds, double waited, double run_cpu, double started)
{
    int missed_started = 0, missed_completed = 0, got_failed = 0, not_100 = 0;
    struct names whys = {0};
    size_t *why_counts = NULL;
    for (int i = 0; i < opt.clients; i++) {
        const struct client *c = &clients[i];
        missed_started += jobs_seen(c, 0) < listed_count;
        missed_completed += jobs_seen(c, 1) < listed_count;
        bool failed = false;
        for (size_t k = 0; k < c->seen_count; k++) {
            failed |= c->seen[k].failed;
            for (size_t j = 0; j < listed_count; j++)
                not_100 += c->seen[k].job == listed[j] && c->seen[k].has_progress && c->seen[k].progress != 100;
        }
        got_failed += failed;
        if (c->closed) {
            size_t before = whys.count;
            int k = intern(&whys, c->closed);
            if (whys.count > before) {
                why_counts = xrealloc(why_counts, whys.count * sizeof *why_counts);
                why_counts[k] = 0;
            }
            why_counts[k]++;
        }
    }

    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", opt.out);
    FILE *f = fopen(tmp, "w");
    if (!f)
        die("cannot write %s: %s", tmp, strerror(errno));
    fprintf(f, "{\"clients\": %d, \"jobs\": [", opt.clients);
    for (size_t j = 0; j < listed_count; j++) {
        fputs(j ? ", " : "", f);
        json_str(f, jobs.name[listed[j]]);
    }
    fprintf(f, "], \"connect_seconds\": %.6f, \"waited_after_jobs_seconds\": %.6f, \"types\": {", connect_seconds, waited);
    bool first = true;
    for (size_t k = 0; k < kinds.count; k++)
        if (kind_counts[k]) {
            fputs(first ? "" : ", ", f);
            json_str(f, kinds.name[k]);
            fprintf(f, ": %zu", kind_counts[k]);
            first = false;
        }
    fprintf(f, "}, \"missed_started\": %d, \"missed_completed\": %d, \"got_failed\": %d, \"last_progress_not_100\": %d, "
               "\"closed_early\": {", missed_started, missed_completed, got_failed, not_100);
    for (size_t k = 0; k < whys.count; k++) {
        fputs(k ? ", " : "", f);
        json_str(f, whys.name[k]);
        fprintf(f, ": %zu", why_counts[k]);
    }
    fputs("}, \"extensions\": [], ", f); /* we offer none, and refuse a server that picks one */
    write_latencies(f);
    fprintf(f, ", \"cpu_seconds\": %.6f, \"run_cpu_seconds\": %.6f, \"wall_seconds\": %.6f}", cpu_seconds(), run_cpu,
            monotonic() - started);
    bool write_error = ferror(f);
    if (fclose(f) != 0 || write_error || rename(tmp, opt.out) != 0)
        die("cannot write %s: %s", opt.out, strerror(errno));
}

/* ------------------------------------------------------------------------------------------ */
/* setup */

static void usage(void)
{
    fprintf(stderr, "usage: ws_load [clients] --url ws://HOST:PORT/PATH --clients N --ready FILE --jobs FILE --out FILE\n"
                    "               [--connect-timeout S] [--jobs-timeout S] [--finish-timeout S]\n");
    exit(2);
}

static double seconds_option(const char *name, const char *value)
{
    char *end;
    double v = strtod(value, &end);
    if (*end || !(v >= 0))
        die("%s: not a number of seconds: %s", name, value);
    return v;
}

/* The same options as `ws_load.py clients` (--name value or --name=value). */
static void parse_options(int argc, char **argv)
{
    int i = 1;
    if (i < argc && strcmp(argv[i], "clients") == 0)
        i++;
    for (; i < argc; i++) {
        char *name = argv[i], *value, *eq = strchr(name, '=');
        if (strncmp(name, "--", 2) != 0)
            usage();
        if (eq) {
            *eq = '\0';
            value = eq + 1;
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            usage();
        }
        if (strcmp(name, "--url") == 0) opt.url = value;
        else if (strcmp(name, "--clients") == 0) opt.clients = atoi(value);
        else if (strcmp(name, "--ready") == 0) opt.ready = value;
        else if (strcmp(name, "--jobs") == 0) opt.jobs = value;
        else if (strcmp(name, "--out") == 0) opt.out = value;
        else if (strcmp(name, "--connect-timeout") == 0) opt.connect_timeout = seconds_option(name, value);
        else if (strcmp(name, "--jobs-timeout") == 0) opt.jobs_timeout = seconds_option(name, value);
        else if (strcmp(name, "--finish-timeout") == 0) opt.finish_timeout = seconds_option(name, value);
        else usage();
    }
    if (!opt.url || !opt.ready || !opt.jobs || !opt.out || opt.clients <= 0)
        usage();
}

/* ws://HOST[:PORT][/PATH], HOST a name, an IPv4 address or [an IPv6 one]; resolved once. */
static void parse_url(const char *url)
{
    if (strncmp(url, "ws://", 5) != 0)
        die("only ws:// URLs: %s", url);
    const char *host = url + 5, *path = strchr(host, '/');
    size_t authority = path ? (size_t)(path - host) : strlen(host);
    if (authority == 0 || authority >= sizeof target.host)
        die("bad URL: %s", url);
    char hostport[256];
    memcpy(hostport, host, authority);
    hostport[authority] = '\0';
    snprintf(target.host_header, sizeof target.host_header, "%s", hostport);
    snprintf(target.path, sizeof target.path, "%s", path ? path : "/");
    char *colon = hostport[0] == '[' ? strstr(hostport, "]:") : strrchr(hostport, ':');
    if (colon && hostport[0] == '[')
        colon++;
    snprintf(target.port, sizeof target.port, "%s", colon ? colon + 1 : "80");
    if (colon)
        *colon = '\0';
    char *name = hostport;
    if (name[0] == '[') {
        name++;
        name[strcspn(name, "]")] = '\0';
    }
    snprintf(target.host, sizeof target.host, "%s", name);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    int error = getaddrinfo(target.host, target.port, &hints, &target.address);
    if (error)
        die("cannot resolve %s: %s", target.host, gai_strerror(error));
}

/* One descriptor per client and a few more. */
static void raise_file_limit(void)
{
    struct rlimit limit;
    rlim_t need = (rlim_t)opt.clients + 64;
    if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY && limit.rlim_cur < need) {
        if (limit.rlim_max != RLIM_INFINITY && limit.rlim_max < need)
            die("%d clients need %llu open files; the hard limit is %llu", opt.clients, (unsigned long long)need,
                (unsigned long long)limit.rlim_max);
        limit.rlim_cur = need;
        if (setrlimit(RLIMIT_NOFILE, &limit) != 0)
            die("setrlimit(RLIMIT_NOFILE, %llu): %s", (unsigned long long)need, strerror(errno));
    }
}

int main(int argc, char **argv)
{
    double started = monotonic();
    parse_options(argc, argv);
    parse_url(opt.url);
    raise_file_limit();
    signal(SIGPIPE, SIG_IGN);
    random_bytes(&rng_state, sizeof rng_state);
    rng_state |= 1;
    if ((epoll_fd = epoll_create1(EPOLL_CLOEXEC)) < 0)
        die("epoll_create1: %s", strerror(errno));
    clients = calloc((size_t)opt.clients, sizeof *clients);
    if (!clients)
        die("out of memory");
    for (int i = 0; i < opt.clients; i++)
        clients[i].fd = -1;
    kind_started = kind_of("flash_started");
    kind_progress = kind_of("flash_progress");
    kind_completed = kind_of("flash_completed");
    kind_failed = kind_of("flash_failed");
    no_job = intern(&jobs, "\n"); /* no job id read from a line can be that */

    double connect_started = monotonic();
    int failed = connect_all();
    double connect_seconds = monotonic() - connect_started;
    if (failed) {
        report_connect_errors(failed);
        close_all();
        return 1;
    }
    double cpu_at_ready = cpu_seconds();
    char ready[64];
    snprintf(ready, sizeof ready, "ready %d %.2fs\n", opt.clients, connect_seconds);
    write_atomically(opt.ready, ready);

    wait_for_jobs();
    double jobs_listed = monotonic();
    wait_for_endings();
    double waited = monotonic() - jobs_listed;
    double run_cpu = cpu_seconds() - cpu_at_ready;

    close_all();
    write_result(connect_seconds, waited, run_cpu, started);
    return 0;
}
