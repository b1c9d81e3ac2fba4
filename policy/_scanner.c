/* The compiled hot loop of `bedside.policy.identifiers.IdentifierIndex.find`.
 *
 * It does in one call what the numpy reference path (`IdentifierIndex._find_reference`) does with
 * a few dozen array operations and their temporaries: cut a lower-cased UTF-8 buffer into
 * tokens, hash each token exactly as `bedside.policy._tokens.tokenize` does, look single tokens
 * up, keep the positions whose next two tokens start an indexed sequence (the pair bitmap), fold
 * and look up those windows, and join regrouped digit runs. The index arrays (sorted entries,
 * bitmaps) are the ones numpy built; this module only reads them through the buffer protocol.
 *
 * Results are returned as raw int64 triples (start byte, end byte, kind * 2 + rank) in a bytes
 * object; rank orders a regrouped-digit match after a sequence match of the same span, as the
 * reference path's emission order does. Sorting, de-duplication and offsets in characters stay
 * in Python (the arrays are small).
 *
 * Must stay bit-for-bit in step with policy/_tokens.py and the reference path in
 * policy/identifiers.py; tests/policy/test_native.py checks both on random texts.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pythread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#define LEN_SALT 0x9E3779B97F4A7C15ULL
#define MUL1 0xBF58476D1CE4E5B9ULL
#define MUL2 0x94D049BB133111EBULL
#define LONG_SALT 0x27D4EB2F165667C5ULL
#define SEQ_MUL 0xC2B2AE3D27D4EB4FULL
#define SEQ_SALT 0x165667B19E3779F9ULL
#define HIGH 0xFFFFFFFFFFFFFF00ULL
#define MAX_TOKEN 64
#define MAX_SEQ 8
#define MAX_DIGIT_GROUPS 6
#define PREFETCH 16

typedef struct {
    int64_t start;
    int64_t end;
    uint64_t hash;
    int32_t sig;    /* length without leading zeros (digit tokens) */
    uint8_t digit;  /* 1: a run of digits, 0: a run of letters */
    uint8_t pair;   /* this token and the next start an indexed sequence (pair bitmap) */
    uint8_t gap;    /* the gap to the next token is short and on one line (see `gap_ok`) */
} Token;

typedef struct {
    Token *tok;
    Py_ssize_t n;
    Py_ssize_t cap;
} Tokens;

/* Is the BMP code point alphanumeric (`str.isalnum`, as `_tokens._alnum_table`)? */
static uint8_t alnum[65536];

typedef struct {
    int64_t *data;
    Py_ssize_t n;
    Py_ssize_t cap;
} Out;

static inline uint64_t mix(uint64_t h) {
    h ^= h >> 30;
    h *= MUL1;
    h ^= h >> 27;
    h *= MUL2;
    return h ^ (h >> 31);
}

/* Little-endian word of the `len` (<= 8) bytes at p, the rest zero. */
static inline uint64_t load_le(const uint8_t *p, Py_ssize_t len) {
    uint64_t w = 0;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    for (Py_ssize_t i = 0; i < len; i++) w |= (uint64_t)p[i] << (8 * i);
#else
    memcpy(&w, p, (size_t)len);
#endif
    return w;
}

/* The `len` (<= 8) bytes at p as load_le does; one unaligned load when 8 bytes are readable. */
static inline uint64_t load_upto8(const uint8_t *p, Py_ssize_t len, const uint8_t *end) {
#if !(defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__)
    if (end - p >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        return len >= 8 ? w : w & ((1ULL << (8 * len)) - 1);
    }
#endif
    return load_le(p, len);
}

/* The hash of one token's significant bytes (see `_tokens.tokenize`); `end` bounds the buffer. */
static inline uint64_t token_hash(const uint8_t *p, Py_ssize_t len, const uint8_t *end) {
    if (len > MAX_TOKEN) return mix((uint64_t)len ^ LONG_SALT);
    uint64_t h = load_upto8(p, len < 8 ? len : 8, end) ^ ((uint64_t)len * LEN_SALT);
    for (Py_ssize_t j = 8; j < len; j += 8) {
        Py_ssize_t rest = len - j;
        h = (h * MUL1) ^ load_upto8(p + j, rest < 8 ? rest : 8, end);
    }
    h *= MUL2;
    return h ^ (h >> 29);
}

/* `token_hash` of the `len` bytes at p read backwards (p[len - 1] first): the hash the same
 * token has in the reversed text, without reversing its bytes. Chunk j of the reversed token is
 * the `c` bytes ending 8j bytes before p + len, byte-swapped: one unaligned load of the eight
 * bytes ending there when they are in the buffer (`begin` is its first byte). */
static inline uint64_t token_hash_reversed(const uint8_t *p, Py_ssize_t len,
                                           const uint8_t *begin) {
    if (len > MAX_TOKEN) return mix((uint64_t)len ^ LONG_SALT);
    uint64_t h = (uint64_t)len * LEN_SALT;
    for (Py_ssize_t j = 0; j < len; j += 8) {
        Py_ssize_t c = len - j < 8 ? len - j : 8;
        const uint8_t *e = p + len - j; /* the chunk is e[-c .. -1], read from e[-1] down */
        uint64_t w;
#if !(defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__)
        if (e - begin >= 8) {
            memcpy(&w, e - 8, 8);
            w = __builtin_bswap64(w);
            if (c < 8) w &= (1ULL << (8 * c)) - 1;
        } else
#endif
            w = __builtin_bswap64(load_le(e - c, c)) >> (8 * (8 - c));
        h = j ? (h * MUL1) ^ w : h ^ w;
    }
    h *= MUL2;
    return h ^ (h >> 29);
}

static inline __attribute__((always_inline)) int tokens_push(Tokens *t, int64_t start,
                                                             int64_t end, const uint8_t *buf,
                                                             Py_ssize_t n, int digit) {
    if (t->n == t->cap) {
        Py_ssize_t cap = t->cap ? t->cap * 2 : 1024;
        Token *grown = (Token *)realloc(t->tok, (size_t)cap * sizeof(Token));
        if (!grown) return -1;
        t->tok = grown;
        t->cap = cap;
    }
    int64_t hstart = start;
    if (digit) {
        /* Leading zeros are dropped, keeping one digit: "0123" hashes as "123". */
        while (end - hstart > 1 && buf[hstart] == '0') hstart++;
    }
    if (t->n) {
        /* The gap after the previous token: at most three bytes, no line break (values are
         * written on one line with short separators: `Smith, John`, `12 / 03 / 1956`). */
        Token *p = &t->tok[t->n - 1];
        int ok = start - p->end <= 3;
        for (int64_t q = p->end; ok && q < start; q++) ok = buf[q] != '\n' && buf[q] != '\r';
        p->gap = (uint8_t)ok;
    }
    Token *k = &t->tok[t->n++];
    k->gap = 0;
    k->start = start;
    k->end = end;
    k->sig = (int32_t)((end - hstart) > INT32_MAX ? INT32_MAX : (end - hstart));
    k->digit = (uint8_t)digit;
    k->pair = 0;
    k->hash = token_hash(buf + hstart, end - hstart, buf + n);
    return 0;
}

/* Split a lower-cased UTF-8 buffer into tokens: maximal runs of digits or of letters, where
 * bytes >= 0x80 are letters unless they belong to a multi-byte character that is not alphanumeric
 * (`alnum`, as `str.isalnum` says; characters outside the BMP are separators). */
/* 1: a digit, 2: an ASCII letter, 3: a byte >= 0x80, 0: anything else. */
static uint8_t ascii_token_class[256];

/* The end of the run of bytes in [lo, hi] (1 <= lo <= hi < 0x80) from i, in a buffer without
 * bytes >= 0x80: eight bytes at a time (a word of an output is found in one step). Each byte plus
 * 0x80 - lo has its top bit set when it is >= lo, plus 0x7f - hi when it is > hi; neither sum
 * carries into the next byte. */
static inline Py_ssize_t ascii_run_end(const uint8_t *buf, Py_ssize_t i, Py_ssize_t n, uint8_t lo,
                                       uint8_t hi) {
#if !(defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__)
    const uint64_t ones = 0x0101010101010101ULL, tops = 0x8080808080808080ULL;
    const uint64_t from = ones * (uint64_t)(0x80 - lo), past = ones * (uint64_t)(0x7f - hi);
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, buf + i, 8);
        uint64_t outside = ~((w + from) & ~(w + past)) & tops;
        if (outside) return i + (__builtin_ctzll(outside) >> 3);
    }
#endif
    while (i < n && buf[i] >= lo && buf[i] <= hi) i++;
    return i;
}

/* `tokenize` for a buffer without bytes >= 0x80: runs of one class (the buffer is lower-cased,
 * so letters are a-z). */
static int tokenize_ascii(const uint8_t *buf, Py_ssize_t n, Tokens *out) {
    const uint8_t *T = ascii_token_class;
    Py_ssize_t i = 0;
    for (;;) {
        while (i < n && !T[buf[i]]) i++;
        if (i >= n) return 0;
        Py_ssize_t start = i;
        uint8_t c = T[buf[i]];
        i = c == 1 ? ascii_run_end(buf, i + 1, n, '0', '9') : ascii_run_end(buf, i + 1, n, 'a', 'z');
        if (tokens_push(out, start, i, buf, n, c == 1) < 0) return -1;
    }
}

/* `tokenize_ascii` from byte `from` (a token's start, or a byte before one) until `most` tokens
 * are pushed: returns the offset just past the last one, or n when the buffer ends first (the
 * window that `Matcher_find` matches at a time). */
static Py_ssize_t tokenize_ascii_window(const uint8_t *buf, Py_ssize_t n, Py_ssize_t from,
                                        Py_ssize_t most, Tokens *out) {
    const uint8_t *T = ascii_token_class;
    Py_ssize_t i = from;
    for (;;) {
        while (i < n && !T[buf[i]]) i++;
        if (i >= n) return n;
        Py_ssize_t start = i;
        uint8_t c = T[buf[i]];
        i = c == 1 ? ascii_run_end(buf, i + 1, n, '0', '9') : ascii_run_end(buf, i + 1, n, 'a', 'z');
        if (tokens_push(out, start, i, buf, n, c == 1) < 0) return -1;
        if (out->n >= most) return i;
    }
}

static int has_high_bytes(const uint8_t *buf, Py_ssize_t n) {
    Py_ssize_t i = 0;
    /* Four words a test: a megabyte's check is a twentieth of a millisecond, not a tenth. */
    for (; i + 32 <= n; i += 32) {
        uint64_t w[4];
        memcpy(w, buf + i, 32);
        if ((w[0] | w[1] | w[2] | w[3]) & 0x8080808080808080ULL) return 1;
    }
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, buf + i, 8);
        if (w & 0x8080808080808080ULL) return 1;
    }
    for (; i < n; i++)
        if (buf[i] & 0x80) return 1;
    return 0;
}

static int tokenize(const uint8_t *buf, Py_ssize_t n, Tokens *out) {
    if (out->cap == 0) {
        Py_ssize_t cap = n / 3 + 16;
        out->tok = (Token *)malloc((size_t)cap * sizeof(Token));
        if (!out->tok) return -1;
        out->cap = cap;
    }
    if (!has_high_bytes(buf, n)) return tokenize_ascii(buf, n, out);
    Py_ssize_t clear_until = 0; /* bytes before this offset of a non-alphanumeric character */
    int cls_run = 0;
    Py_ssize_t run_start = 0;
    const uint8_t *T = ascii_token_class;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint8_t b = buf[i];
        int cls;
        if (b < 0x80 && i >= clear_until) {
            /* An ASCII byte outside a multi-byte character: its class by table, as below,
             * and the bytes of its class after it in one tight loop (they change nothing).
             * Bytes >= 0x80 have class 3 in the table, which no run of ASCII takes. */
            cls = T[b];
            if (cls != cls_run) {
                if (cls_run && tokens_push(out, run_start, i, buf, n, cls_run == 1) < 0)
                    return -1;
                cls_run = cls;
                run_start = i;
            }
            while (i + 1 < n && T[buf[i + 1]] == cls) i++;
            continue;
        }
        if ((uint8_t)(b - '0') < 10) {
            cls = 1;
        } else if ((uint8_t)(b - 'a') < 26) {
            cls = i < clear_until ? 0 : 2;
        } else if (b >= 0x80) {
            if (b >= 0xC0) {
                int64_t b0 = b;
                int64_t b1 = buf[i + 1 < n ? i + 1 : n - 1] & 0x3F;
                int64_t b2 = buf[i + 2 < n ? i + 2 : n - 1] & 0x3F;
                int width, ok;
                if (b0 < 0xE0) {
                    width = 2;
                    ok = alnum[((b0 & 0x1F) << 6) | b1];
                } else if (b0 < 0xF0) {
                    width = 3;
                    ok = alnum[((b0 & 0x0F) << 12) | (b1 << 6) | b2];
                } else {
                    width = 4;
                    ok = 0;
                }
                if (!ok && i + width > clear_until) clear_until = i + width;
            }
            cls = i < clear_until ? 0 : 2;
        } else {
            cls = 0;
        }
        if (cls != cls_run) {
            if (cls_run && tokens_push(out, run_start, i, buf, n, cls_run == 1) < 0) return -1;
            cls_run = cls;
            run_start = i;
        }
    }
    if (cls_run && tokens_push(out, run_start, n, buf, n, cls_run == 1) < 0) return -1;
    return 0;
}

static int out_push(Out *o, int64_t a, int64_t b, int64_t c) {
    if (o->n + 3 > o->cap) {
        Py_ssize_t cap = o->cap ? o->cap * 2 : 96;
        int64_t *grown = (int64_t *)realloc(o->data, (size_t)cap * sizeof(int64_t));
        if (!grown) return -1;
        o->data = grown;
        o->cap = cap;
    }
    o->data[o->n++] = a;
    o->data[o->n++] = b;
    o->data[o->n++] = c;
    return 0;
}

/* A hash to look up and the span it covers; rank 1 for a regrouped number. */
typedef struct {
    uint64_t h;
    int64_t start, end;
    int64_t rank;
} Probe;

typedef struct {
    Probe *p;
    Py_ssize_t n, cap;
} Probes;

static int probes_push(Probes *q, uint64_t h, int64_t start, int64_t end, int64_t rank) {
    if (q->n == q->cap) {
        Py_ssize_t cap = q->cap ? q->cap * 2 : 256;
        Probe *grown = (Probe *)realloc(q->p, (size_t)cap * sizeof(Probe));
        if (!grown) return -1;
        q->p = grown;
        q->cap = cap;
    }
    Probe *x = &q->p[q->n++];
    x->h = h;
    x->start = start;
    x->end = end;
    x->rank = rank;
    return 0;
}

struct Scratch {
    Tokens tk;
    Tokens rk; /* a window's tokens as the reversed text has them (`tokenize_window_both`) */
    Probes maybe, seq;
    uint8_t *rev; /* a backwards search's bytes, reversed */
    Py_ssize_t revcap;
};

static void scratch_free(struct Scratch *sc) {
    free(sc->tk.tok);
    free(sc->rk.tok);
    free(sc->maybe.p);
    free(sc->seq.p);
    free(sc->rev);
    memset(sc, 0, sizeof(*sc));
}

/* ------------------------------------------------------------------ the matcher object */

typedef struct {
    PyObject_HEAD
    Py_buffer entries; /* sorted uint64: hash top 56 bits | kind */
    Py_buffer bits;    /* uint64 words: bitmap of entries */
    Py_buffer pbits;   /* uint64 words: bitmap of pair keys */
    int have_entries, have_bits, have_pbits;
    unsigned shift, pshift;
    int lengths[MAX_SEQ + 1]; /* sequence lengths (>= 2) the index holds, ascending */
    int nlengths;
    int min_digits;
    int need; /* digits a regrouped number needs */
    /* Directory over the top `dbits` bits of the sorted entries: entries whose top bits are t are
     * entries[dir[t]:dir[t + 1]]. Two cache lines per exact lookup instead of a binary search. */
    uint32_t *dir;
    unsigned dbits;
    /* Scratch arrays kept between calls (tokens and probes: megabytes for a megabyte of
     * output), each taken under its lock by one call at a time: fresh ones would cost their
     * page faults, and their growth its copies, on every call. */
    struct Scratch *pool;
    PyThread_type_lock pool_lock[2];
} Matcher;

static inline int bit_set(const uint64_t *words, unsigned shift, uint64_t key) {
    uint64_t slot = key >> shift;
    return (int)((words[slot >> 6] >> (slot & 63)) & 1);
}

/* The kind of the entry whose top 56 bits equal those of h, or -1. */
static inline int lookup(const Matcher *m, uint64_t h) {
    const uint64_t *e = (const uint64_t *)m->entries.buf;
    uint64_t hc = h & HIGH;
    Py_ssize_t lo, hi;
    if (m->dbits) {
        uint64_t t = hc >> (64 - m->dbits);
        lo = m->dir[t];
        hi = m->dir[t + 1];
    } else {
        lo = 0;
        hi = m->entries.len / 8;
    }
    Py_ssize_t end = hi;
    /* Narrow to [lo, hi] holding the first entry >= hc (if any), then step to it. */
    while (hi - lo > 8) {
        Py_ssize_t mid = lo + (hi - lo) / 2;
        if (e[mid] < hc) lo = mid + 1;
        else hi = mid;
    }
    for (; lo < end; lo++) {
        if (e[lo] >= hc) return (e[lo] & HIGH) == hc ? (int)(e[lo] & 0xFF) : -1;
    }
    return -1;
}

static void Matcher_dealloc(Matcher *self) {
    if (self->pool) {
        scratch_free(&self->pool[0]);
        scratch_free(&self->pool[1]);
        free(self->pool);
    }
    for (int k = 0; k < 2; k++)
        if (self->pool_lock[k]) PyThread_free_lock(self->pool_lock[k]);
    if (self->have_entries) PyBuffer_Release(&self->entries);
    if (self->have_bits) PyBuffer_Release(&self->bits);
    if (self->have_pbits) PyBuffer_Release(&self->pbits);
    free(self->dir);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int get_words(PyObject *obj, Py_buffer *view, const char *what) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS) < 0) return -1;
    if (view->len % 8) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_ValueError, "%s: a buffer of 64-bit words is needed", what);
        return -1;
    }
    return 0;
}

static int Matcher_init(Matcher *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"entries", "bits", "shift", "pair_bits", "pair_shift", "lengths",
                             "min_digits", "need", NULL};
    PyObject *entries, *bits, *pbits, *lengths;
    unsigned shift, pshift;
    int min_digits, need;
    if (self->have_entries) {
        PyErr_SetString(PyExc_RuntimeError, "Matcher is already initialised");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOIOIOii", kwlist, &entries, &bits, &shift,
                                     &pbits, &pshift, &lengths, &min_digits, &need))
        return -1;
    if (shift < 1 || shift > 63 || pshift < 1 || pshift > 63) {
        PyErr_SetString(PyExc_ValueError, "bitmap shifts must be in 1..63");
        return -1;
    }
    if (get_words(entries, &self->entries, "entries") < 0) return -1;
    self->have_entries = 1;
    if (get_words(bits, &self->bits, "bits") < 0) return -1;
    self->have_bits = 1;
    if (get_words(pbits, &self->pbits, "pair_bits") < 0) return -1;
    self->have_pbits = 1;
    /* The bitmaps must cover every slot a key can take. */
    if ((uint64_t)self->bits.len * 8 < (1ULL << (64 - shift)) ||
        (uint64_t)self->pbits.len * 8 < (1ULL << (64 - pshift))) {
        PyErr_SetString(PyExc_ValueError, "a bitmap is smaller than its shift implies");
        return -1;
    }
    self->shift = shift;
    self->pshift = pshift;
    self->min_digits = min_digits;
    self->need = need;
    PyObject *seq = PySequence_Fast(lengths, "lengths must be a sequence of ints");
    if (!seq) return -1;
    Py_ssize_t nl = PySequence_Fast_GET_SIZE(seq);
    self->nlengths = 0;
    for (Py_ssize_t i = 0; i < nl; i++) {
        long k = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
        if (k == -1 && PyErr_Occurred()) {
            Py_DECREF(seq);
            return -1;
        }
        if (k < 2 || k > MAX_SEQ || self->nlengths >= MAX_SEQ ||
            (self->nlengths && k <= self->lengths[self->nlengths - 1])) {
            Py_DECREF(seq);
            PyErr_SetString(PyExc_ValueError, "lengths must ascend within 2..8");
            return -1;
        }
        self->lengths[self->nlengths++] = (int)k;
    }
    Py_DECREF(seq);
    self->pool = (struct Scratch *)calloc(2, sizeof(struct Scratch));
    if (!self->pool) {
        PyErr_NoMemory();
        return -1;
    }
    for (int k = 0; k < 2; k++) {
        self->pool_lock[k] = PyThread_allocate_lock();
        if (!self->pool_lock[k]) {
            PyErr_NoMemory();
            return -1;
        }
    }
    Py_ssize_t ne = self->entries.len / 8;
    if (ne > (Py_ssize_t)UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "too many entries");
        return -1;
    }
    unsigned d = 0;
    while (d < 30 && ((Py_ssize_t)1 << (d + 3)) < ne) d++;
    self->dbits = d;
    if (d) {
        const uint64_t *e = (const uint64_t *)self->entries.buf;
        size_t nb = (size_t)1 << d;
        self->dir = (uint32_t *)malloc((nb + 1) * sizeof(uint32_t));
        if (!self->dir) {
            PyErr_NoMemory();
            return -1;
        }
        Py_ssize_t i = 0;
        for (size_t t = 0; t <= nb; t++) {
            while (i < ne && (e[i] >> (64 - d)) < t) i++;
            self->dir[t] = (uint32_t)i;
        }
    }
    return 0;
}

/* Is the gap after token i short (at most 3 bytes) and without a line break? (The tokenizer
 * notes it, `tokens_push`.) */
static inline int gap_ok(const uint8_t *buf, const Token *t, Py_ssize_t i) {
    (void)buf;
    return t[i].gap;
}

/* Byte j of the text the tokens are of: `buf` itself, or with `rev` `buf` reversed (the tokens
 * of `tokenize_window_both`, whose offsets are the reversed text's). */
static inline uint8_t view_byte(const uint8_t *buf, Py_ssize_t n, int rev, Py_ssize_t j) {
    return rev ? buf[n - 1 - j] : buf[j];
}

/* Are tokens i and i + 1 digit groups of one written number (see `_tokens.group_gaps_ok`)? */
static inline int joinable(const uint8_t *buf, Py_ssize_t n, int rev, const Token *t,
                           Py_ssize_t i) {
    const Token *x = &t[i], *y = &t[i + 1];
    if (!x->digit || !y->digit || x->end - x->start < 2 || y->end - y->start < 2) return 0;
    int64_t g = x->end, width = y->start - g;
    uint8_t c1 = view_byte(buf, n, rev, g), c2 = view_byte(buf, n, rev, g + 1 < n ? g + 1 : n - 1);
    if (width == 1) return c1 == ' ' || c1 == '-';
    if (width == 2)
        return (c1 == ')' || c2 == '(') && (c1 == ' ' || c1 == ')') && (c2 == ' ' || c2 == '(');
    return 0;
}

/* Keep the probes whose hash is in the entries' bitmap (words prefetched a few probes ahead,
 * so the cache misses of a large index overlap), appending them to `keep`. */
static int filter_bitmap(const Matcher *m, const Probes *q, Probes *keep) {
    const uint64_t *bits = (const uint64_t *)m->bits.buf;
    for (Py_ssize_t i = 0; i < q->n; i++) {
        if (i + PREFETCH < q->n) __builtin_prefetch(&bits[(q->p[i + PREFETCH].h >> m->shift) >> 6]);
        const Probe *x = &q->p[i];
        if (bit_set(bits, m->shift, x->h) && probes_push(keep, x->h, x->start, x->end, x->rank) < 0)
            return -1;
    }
    return 0;
}

/* Look every probe up in the entries (directory slots and entries prefetched ahead); emit hits. */
static int resolve(const Matcher *m, const Probes *q, Out *out) {
    const uint64_t *e = (const uint64_t *)m->entries.buf;
    const unsigned d = m->dbits;
    for (Py_ssize_t i = 0; i < q->n; i++) {
        if (d) {
            if (i + 2 * PREFETCH < q->n)
                __builtin_prefetch(&m->dir[(q->p[i + 2 * PREFETCH].h & HIGH) >> (64 - d)]);
            if (i + PREFETCH < q->n)
                __builtin_prefetch(&e[m->dir[(q->p[i + PREFETCH].h & HIGH) >> (64 - d)]]);
        }
        const Probe *x = &q->p[i];
        int kind = lookup(m, x->h);
        if (kind >= 0 && out_push(out, x->start, x->end, (int64_t)kind * 2 + x->rank) < 0)
            return -1;
    }
    return 0;
}

/* What token j will be probed for: 1 on its own (long enough to be indexed alone), 2 as the
 * first of a sequence (the gap after it is one a value's tokens can have, see `gap_ok`: no
 * indexed sequence starts at a token without it, so its pair bit need not be read). */
static inline uint8_t probe_kinds(const Matcher *m, const uint8_t *buf, const Token *t,
                                  Py_ssize_t nt, Py_ssize_t j, int want_pairs) {
    const Token *x = &t[j];
    uint8_t f = (x->digit ? x->sig >= m->min_digits : x->sig >= 2) ? 1 : 0;
    if (want_pairs && j + 1 < nt && gap_ok(buf, t, j)) f |= 2;
    return f;
}

/* Tokens are matched a block at a time: each of the three passes below reads a block while it
 * is in the cache, instead of the whole token array (eight megabytes for a megabyte of
 * numbers) three times over. */
#define BLOCK 2048

/* Every match in the tokens, as (start, end, kind * 2 + rank) triples in `out`. With `rev`, the
 * tokens are those of `buf` reversed (`tokenize_window_both`), and so are their offsets. */
static int match_into(const Matcher *m, const uint8_t *buf, Py_ssize_t n, int rev, Tokens *tk,
                      Out *out, Probes *maybe, Probes *seq) {
    Token *t = tk->tok;
    Py_ssize_t nt = tk->n;
    const uint64_t *bits = (const uint64_t *)m->bits.buf;
    const uint64_t *pbits = (const uint64_t *)m->pbits.buf;
    const int want_pairs = m->nlengths > 0 && nt >= 2;
    int run = 0; /* joinable pairs ending just before token l (the third pass) */
    uint8_t joined[MAX_DIGIT_GROUPS * (MAX_TOKEN + 1) + 64];
    uint8_t *big = NULL;
    Py_ssize_t bigcap = 0;
    int rc = 0;

    /* `pair` holds probe_kinds until the first pass replaces it by the pair bit; the first
     * PREFETCH tokens get theirs here, every later one when it is prefetched. */
    for (Py_ssize_t j = 0; j < nt && j < PREFETCH; j++)
        t[j].pair = probe_kinds(m, buf, t, nt, j, want_pairs);

    for (Py_ssize_t b0 = 0; b0 < nt && rc == 0; b0 += BLOCK) {
        Py_ssize_t b1 = b0 + BLOCK < nt ? b0 + BLOCK : nt;

        /* Single tokens and the pair prefilter: a bitmap probe for each token long enough to
         * be indexed alone and for each that can start a sequence, prefetched ahead. */
        int digits = 0; /* digit tokens in the block: none, and the third pass has nothing */
        for (Py_ssize_t i = b0; i < b1; i++) {
            Py_ssize_t j = i + PREFETCH;
            if (j < nt) {
                uint8_t f = probe_kinds(m, buf, t, nt, j, want_pairs);
                t[j].pair = f;
                if (f & 1) __builtin_prefetch(&bits[(t[j].hash >> m->shift) >> 6]);
                if (f & 2) {
                    uint64_t ps = (t[j].hash * SEQ_MUL + t[j + 1].hash) >> m->pshift;
                    __builtin_prefetch(&pbits[ps >> 6]);
                }
            }
            const Token *x = &t[i];
            uint8_t f = x->pair;
            digits |= x->digit;
            if ((f & 1) && bit_set(bits, m->shift, x->hash) &&
                probes_push(maybe, x->hash, x->start, x->end, 0) < 0) {
                rc = -1;
                break;
            }
            t[i].pair = (uint8_t)((f & 2) &&
                                  bit_set(pbits, m->pshift, x->hash * SEQ_MUL + t[i + 1].hash));
        }
        if (rc) break;

        /* Sequences, where the pair bitmap says some indexed sequence starts. */
        for (Py_ssize_t c = b0; want_pairs && c < b1 && c + 1 < nt; c++) {
            if (!t[c].pair) continue;
            int good = 0; /* gaps known to be fine after tokens c .. c + good - 1 */
            uint64_t acc = t[c].hash;
            int folded = 1;
            for (int li = 0; li < m->nlengths; li++) {
                int k = m->lengths[li];
                if (c + k > nt) break;
                while (good < k - 1 && gap_ok(buf, t, c + good)) good++;
                if (good < k - 1) break;
                for (; folded < k; folded++) acc = acc * SEQ_MUL + t[c + folded].hash;
                uint64_t h = mix(acc + (uint64_t)k * SEQ_SALT);
                if (probes_push(seq, h, t[c].start, t[c + k - 1].end, 0) < 0) {
                    rc = -1;
                    break;
                }
            }
            if (rc) break;
        }
        if (rc) break;

        /* Numbers whose digit groups are split differently from the indexed value. A block
         * without a digit token has none (and the run of joinable pairs it would reset is reset
         * by the next block's first token, which no digit token precedes). */
        if (!digits) {
            run = 0;
            continue;
        }
        for (Py_ssize_t l = b0 > 1 ? b0 : 1; l < b1 && rc == 0; l++) {
            run = joinable(buf, n, rev, t, l - 1) ? run + 1 : 0;
            if (!run) continue;
            int64_t total = t[l].end - t[l].start;
            for (int k = 2; k <= MAX_DIGIT_GROUPS && k - 1 <= run; k++) {
                Py_ssize_t f = l - k + 1;
                total += t[f].end - t[f].start;
                if (total < m->need) continue;
                uint8_t *dst = joined;
                if ((size_t)total > sizeof(joined)) {
                    if (total > bigcap) {
                        uint8_t *grown = (uint8_t *)realloc(big, (size_t)total);
                        if (!grown) {
                            rc = -1;
                            break;
                        }
                        big = grown;
                        bigcap = total;
                    }
                    dst = big;
                }
                Py_ssize_t len = 0;
                for (Py_ssize_t j = f; j <= l; j++) {
                    if (rev) {
                        for (int64_t q = t[j].start; q < t[j].end; q++) dst[len++] = buf[n - 1 - q];
                    } else {
                        memcpy(dst + len, buf + t[j].start, (size_t)(t[j].end - t[j].start));
                        len += t[j].end - t[j].start;
                    }
                }
                Py_ssize_t z = 0;
                while (len - z > 1 && dst[z] == '0') z++;
                if (len - z < m->need) continue;
                uint64_t h = token_hash(dst + z, len - z, dst + len);
                if (probes_push(seq, h, t[f].start, t[l].end, 1) < 0) {
                    rc = -1;
                    break;
                }
            }
        }
    }
    free(big);
    if (rc < 0) return -1;
    if (filter_bitmap(m, seq, maybe) < 0) return -1;
    return resolve(m, maybe, out);
}

/* A pooled scratch holding more than this after a call is freed (a giant text once). */
#define SCRATCH_KEEP ((size_t)64 << 20)

/* `dst` = `src` (n bytes) reversed, eight bytes at a time. */
static void reverse_bytes(uint8_t *dst, const uint8_t *src, Py_ssize_t n) {
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, src + n - i - 8, 8);
        w = __builtin_bswap64(w);
        memcpy(dst + i, &w, 8);
    }
    for (; i < n; i++) dst[i] = src[n - 1 - i];
}

/* A long ASCII buffer is tokenized and matched a window of WINDOW_TOKENS tokens at a time, so
 * that its tokens (32 bytes each: six megabytes for a megabyte of words) are read back from the
 * cache rather than from memory, where the guard's other threads and the sentry's hashing of the
 * same output compete for it. Each window after the first starts `overlap` tokens before the end
 * of the one before: every match spans at most that many consecutive tokens (a sequence of the
 * index's longest length, or MAX_DIGIT_GROUPS digit groups), so it lies whole in some window and
 * is found there exactly as in one pass over all the tokens (its tokens, the gaps between them
 * and the digit groups before it are all in that window). A match in the overlap is found twice;
 * the caller keeps one of each span (`IdentifierIndex._spans_native`). */
#define WINDOW_TOKENS 4096
#define WINDOW_BYTES ((Py_ssize_t)64 * 1024)

static int match_windows(const Matcher *m, const uint8_t *buf, Py_ssize_t n, struct Scratch *sc,
                         Out *out) {
    Py_ssize_t overlap = MAX_DIGIT_GROUPS;
    if (m->nlengths && m->lengths[m->nlengths - 1] > overlap) overlap = m->lengths[m->nlengths - 1];
    Py_ssize_t from = 0;
    for (;;) {
        sc->tk.n = sc->maybe.n = sc->seq.n = 0;
        Py_ssize_t end = tokenize_ascii_window(buf, n, from, WINDOW_TOKENS, &sc->tk);
        if (end < 0) return -1;
        if (match_into(m, buf, n, 0, &sc->tk, out, &sc->maybe, &sc->seq) < 0) return -1;
        if (end >= n) return 0;
        /* (WINDOW_TOKENS tokens were pushed, far more than `overlap`.) */
        from = sc->tk.tok[sc->tk.n - overlap].start;
    }
}

static int tokens_reserve(Tokens *t, Py_ssize_t cap) {
    if (t->cap >= cap) return 0;
    Token *grown = (Token *)realloc(t->tok, (size_t)cap * sizeof(Token));
    if (!grown) return -1;
    t->tok = grown;
    t->cap = cap;
    return 0;
}

#define SIG(len) ((int32_t)((len) > INT32_MAX ? INT32_MAX : (len)))

/* `tokenize_ascii_window` into `fw`, and the same tokens as the reversed buffer has them into the
 * last `fw->n` slots of `rv` (`rv->tok + most - fw->n`, ascending): in reverse order, offsets
 * mirrored, each hashed over its bytes read backwards (a digit token's significant bytes then end
 * before its trailing zeros, which are the reversed token's leading ones), and the gap after each
 * the gap before it forwards (the window's first token's is unknown: 0, as a tokenization of the
 * reversed bytes leaves the gap after its last token). Tokenizing the reversed bytes gives these
 * same tokens, for twice the cost (`find_both`). */
static Py_ssize_t tokenize_window_both(const uint8_t *buf, Py_ssize_t n, Py_ssize_t from,
                                       Py_ssize_t most, Tokens *fw, Tokens *rv) {
    if (tokens_reserve(fw, most) < 0 || tokens_reserve(rv, most) < 0) return -1;
    const uint8_t *T = ascii_token_class;
    Token *f = fw->tok, *r = rv->tok + most - 1; /* token k reversed at r[-k] */
    Py_ssize_t nt = 0, i = from, ret;
    int64_t prev_end = 0; /* (kept here: read back from the token, it waits on its store) */
    for (;;) {
        while (i < n && !T[buf[i]]) i++;
        if (i >= n) {
            ret = n;
            break;
        }
        const int64_t start = i;
        const int digit = T[buf[i]] == 1;
        i = digit ? ascii_run_end(buf, i + 1, n, '0', '9') : ascii_run_end(buf, i + 1, n, 'a', 'z');
        uint8_t gap = 0;
        if (nt) {
            int ok = start - prev_end <= 3;
            for (int64_t q = prev_end; ok && q < start; q++) ok = buf[q] != '\n' && buf[q] != '\r';
            gap = (uint8_t)ok;
            f[nt - 1].gap = gap;
        }
        int64_t hs = start, re = i;
        if (digit) {
            /* Leading zeros are dropped, keeping one digit (`tokens_push`); reversed, the
             * trailing ones. */
            while (i - hs > 1 && buf[hs] == '0') hs++;
            while (re - start > 1 && buf[re - 1] == '0') re--;
        }
        Token *k = &f[nt];
        k->start = start;
        k->end = i;
        k->hash = token_hash(buf + hs, i - hs, buf + n);
        k->sig = SIG(i - hs);
        k->digit = (uint8_t)digit;
        k->pair = 0;
        k->gap = 0;
        Token *x = r - nt;
        x->start = n - i;
        x->end = n - start;
        x->hash = token_hash_reversed(buf + start, re - start, buf);
        x->sig = SIG(re - start);
        x->digit = (uint8_t)digit;
        x->pair = 0;
        x->gap = gap;
        prev_end = i;
        if (++nt >= most) {
            ret = i;
            break;
        }
    }
    fw->n = rv->n = nt;
    return ret;
}

/* The first offset at or after p where tokenizing may start in an ASCII buffer: not inside a
 * token (the byte before is of another class, or the byte at p is no token's). */
static Py_ssize_t token_boundary(const uint8_t *buf, Py_ssize_t n, Py_ssize_t p) {
    const uint8_t *T = ascii_token_class;
    if (p <= 0) return 0;
    while (p < n && T[buf[p]] && T[buf[p]] == T[buf[p - 1]]) p++;
    return p < n ? p : n;
}

/* find_both(buf, start=0, stop=-1) -> (forwards, backwards): `find(buf)` and `find(buf, True)`
 * of an ASCII buffer from one tokenization, a window at a time (`match_windows`): each window's
 * tokens are made with the reversed text's (`tokenize_window_both`), and both are matched.
 *
 * `start` and `stop` (byte offsets, moved forward to a token boundary) give the part of the
 * matches found: those whose first token (forwards) starts in [start, stop) at least, and more
 * near the ends; two calls on [0, m) and [m, n) find every match between them (in threads: the
 * core releases the GIL), a match near m possibly twice. The windows of a part start at `start`
 * and end once the next would start at or after `stop`: a match beginning before that lies whole
 * in some window (see `match_windows`), and one beginning after it is the next part's. */
static PyObject *Matcher_find_both(Matcher *self, PyObject *args) {
    Py_buffer view;
    PyObject *arg;
    Py_ssize_t start = 0, stop = -1;
    if (!PyArg_ParseTuple(args, "O|nn:find_both", &arg, &start, &stop)) return NULL;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    const uint8_t *buf = (const uint8_t *)view.buf;
    Py_ssize_t n = view.len;
    Out fwd = {NULL, 0, 0}, bwd = {NULL, 0, 0};
    struct Scratch local;
    memset(&local, 0, sizeof(local));
    int rc = 0, ascii = 1;
    Py_BEGIN_ALLOW_THREADS
    if (has_high_bytes(buf, n)) {
        ascii = 0;
    } else {
        int slot = -1;
        for (int k = 0; k < 2 && slot < 0; k++)
            if (PyThread_acquire_lock(self->pool_lock[k], NOWAIT_LOCK)) slot = k;
        struct Scratch *sc = slot >= 0 ? &self->pool[slot] : &local;
        Py_ssize_t overlap = MAX_DIGIT_GROUPS;
        if (self->nlengths && self->lengths[self->nlengths - 1] > overlap)
            overlap = self->lengths[self->nlengths - 1];
        Py_ssize_t from = token_boundary(buf, n, start < 0 ? 0 : start);
        Py_ssize_t until = stop < 0 || stop > n ? n : token_boundary(buf, n, stop);
        while (from < until) {
            sc->tk.n = sc->maybe.n = sc->seq.n = 0;
            Py_ssize_t end =
                tokenize_window_both(buf, n, from, WINDOW_TOKENS, &sc->tk, &sc->rk);
            if (end < 0 || match_into(self, buf, n, 0, &sc->tk, &fwd, &sc->maybe, &sc->seq) < 0) {
                rc = -1;
                break;
            }
            sc->maybe.n = sc->seq.n = 0;
            Tokens reversed = {sc->rk.tok + WINDOW_TOKENS - sc->rk.n, sc->rk.n, sc->rk.n};
            if (match_into(self, buf, n, 1, &reversed, &bwd, &sc->maybe, &sc->seq) < 0) {
                rc = -1;
                break;
            }
            if (end >= n) break;
            /* (WINDOW_TOKENS tokens were pushed, far more than `overlap`.) */
            from = sc->tk.tok[sc->tk.n - overlap].start;
        }
        if (slot < 0 || rc < 0 ||
            (size_t)(sc->tk.cap + sc->rk.cap) * sizeof(Token) +
                    (size_t)(sc->maybe.cap + sc->seq.cap) * sizeof(Probe) + (size_t)sc->revcap >
                SCRATCH_KEEP)
            scratch_free(sc);
        if (slot >= 0) PyThread_release_lock(self->pool_lock[slot]);
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    PyObject *res = NULL;
    if (!ascii) {
        PyErr_SetString(PyExc_ValueError, "find_both needs an ASCII buffer");
    } else if (rc < 0) {
        PyErr_NoMemory();
    } else {
        res = Py_BuildValue("(y#y#)", fwd.data ? (const char *)fwd.data : "",
                            (Py_ssize_t)(fwd.n * sizeof(int64_t)),
                            bwd.data ? (const char *)bwd.data : "",
                            (Py_ssize_t)(bwd.n * sizeof(int64_t)));
    }
    free(fwd.data);
    free(bwd.data);
    return res;
}

/* find(buf, backwards=False): with `backwards`, the matches in the bytes of `buf` reversed
 * (offsets of the reversed bytes), without the caller making them. */
static PyObject *Matcher_find(Matcher *self, PyObject *args) {
    Py_buffer view;
    PyObject *arg;
    int backwards = 0;
    if (!PyArg_ParseTuple(args, "O|p:find", &arg, &backwards)) return NULL;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    const uint8_t *buf = (const uint8_t *)view.buf;
    Py_ssize_t n = view.len;
    Out out = {NULL, 0, 0};
    struct Scratch local;
    memset(&local, 0, sizeof(local));
    int rc = 0;
    Py_BEGIN_ALLOW_THREADS
    int slot = -1;
    for (int k = 0; k < 2 && slot < 0; k++)
        if (PyThread_acquire_lock(self->pool_lock[k], NOWAIT_LOCK)) slot = k;
    struct Scratch *sc = slot >= 0 ? &self->pool[slot] : &local;
    sc->tk.n = sc->maybe.n = sc->seq.n = 0;
    if (backwards && n) {
        /* Reversed into the pooled scratch: a fresh megabyte would cost its page faults (a
         * third of a millisecond) on every backwards search of a long output. */
        if (sc->revcap < n) {
            free(sc->rev);
            sc->rev = (uint8_t *)malloc((size_t)n);
            sc->revcap = sc->rev ? n : 0;
        }
        if (sc->rev) {
            reverse_bytes(sc->rev, buf, n);
            buf = sc->rev;
        } else {
            rc = -1;
        }
    }
    if (rc < 0) {
        /* (out of memory for the reversed bytes) */
    } else if (n > WINDOW_BYTES && !has_high_bytes(buf, n)) {
        rc = match_windows(self, buf, n, sc, &out);
    } else {
        rc = tokenize(buf, n, &sc->tk);
        if (rc == 0) rc = match_into(self, buf, n, 0, &sc->tk, &out, &sc->maybe, &sc->seq);
    }
    if (slot < 0 || rc < 0 ||
        (size_t)sc->tk.cap * sizeof(Token) + (size_t)(sc->maybe.cap + sc->seq.cap) * sizeof(Probe) +
                (size_t)sc->revcap >
            SCRATCH_KEEP)
        scratch_free(sc);
    if (slot >= 0) PyThread_release_lock(self->pool_lock[slot]);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    if (rc < 0) {
        free(out.data);
        return PyErr_NoMemory();
    }
    PyObject *res = PyBytes_FromStringAndSize((const char *)out.data,
                                              (Py_ssize_t)(out.n * sizeof(int64_t)));
    free(out.data);
    return res;
}

static PyMethodDef Matcher_methods[] = {
    {"find", (PyCFunction)Matcher_find, METH_VARARGS,
     "find(buf, backwards=False) -> bytes of int64 triples (start, end, kind * 2 + rank), in "
     "emission order (of buf reversed with backwards); a long ASCII buffer's matches in the "
     "overlap of two windows come twice"},
    {"find_both", (PyCFunction)Matcher_find_both, METH_VARARGS,
     "find_both(buf, start=0, stop=-1) -> (find(buf), find(buf, True)) of an ASCII buffer from "
     "one tokenization, the matches of the part [start, stop) of it (and possibly more, and "
     "some twice)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject MatcherType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "bedside.policy._scanner.Matcher",
    .tp_basicsize = sizeof(Matcher),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The index arrays of an IdentifierIndex, searchable in one pass over a text.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Matcher_init,
    .tp_dealloc = (destructor)Matcher_dealloc,
    .tp_methods = Matcher_methods,
};

/* tokens(buf) -> bytes of int64 quintuples (start, end, hash, significant, is_digit): the
 * tokenizer alone, for tests against `_tokens.tokenize`. */
static PyObject *py_tokens(PyObject *mod, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    Tokens tk = {NULL, 0, 0};
    int rc = tokenize((const uint8_t *)view.buf, view.len, &tk);
    PyBuffer_Release(&view);
    if (rc < 0) {
        free(tk.tok);
        return PyErr_NoMemory();
    }
    PyObject *res = PyBytes_FromStringAndSize(NULL, tk.n * 5 * (Py_ssize_t)sizeof(int64_t));
    if (res) {
        int64_t *o = (int64_t *)PyBytes_AS_STRING(res);
        for (Py_ssize_t i = 0; i < tk.n; i++) {
            o[5 * i] = tk.tok[i].start;
            o[5 * i + 1] = tk.tok[i].end;
            memcpy(&o[5 * i + 2], &tk.tok[i].hash, 8);
            o[5 * i + 3] = tk.tok[i].sig;
            o[5 * i + 4] = tk.tok[i].digit;
        }
    }
    free(tk.tok);
    return res;
}


/* ------------------------------------------------------------------ candidate spans of a text
 *
 * text_spans(text) finds in one pass over a str what `bedside.policy.scan` and `phi` look for
 * before decoding or running a regex, in character offsets (each list as int64 pairs):
 *   0 base64: runs of [A-Za-z0-9+/_=\r\n-], >= 12 long, with both upper- and lower-case letters
 *   1 hex: runs of [0-9a-fA-F], >= 10 long
 *   2 spaced hex: runs of [0-9a-fA-F :], >= 14 long, with a letter a-f and >= 10 hex digits
 *   3 int: runs of [0-9], >= 7 long, with no '.' just before or after
 *   4 number windows (`phi._number_windows`; only for texts of >= 2048 characters)
 *   5 ords: runs of decimal digits, white space and commas holding >= 5 commas
 *   6 ip: runs of decimal digits and dots holding >= 3 dots
 *     (5 and 6 with the character after the run, which the patterns' look-ahead reads)
 *   7 postcode: windows [p - 1, p + 10) around a letter (or any non-ASCII character) at p
 *     followed by a decimal digit that a digit and two inward-code letters follow within
 *     three characters (`postcode_tail`), merged where they overlap
 * and 8: whether the text holds a decimal digit (`\d`). "Decimal digit" and "white space" are
 * Unicode's, as `re` reads `\d` and `\s` in str patterns; the other classes are ASCII only. */

enum { C_B64 = 1, C_HEX = 2, C_SHEX = 4, C_DIG = 8, C_UP = 16, C_LOW = 32, C_HEXL = 64, C_SEP = 128 };
static uint8_t ascii_class[128];
/* ascii_class, and 0 for the characters 128-255 (for one-byte strs: no bounds check). */
static uint8_t latin1_class[256];

static void init_ascii_class(void) {
    for (int c = 0; c < 128; c++) {
        uint8_t k = 0;
        int digit = c >= '0' && c <= '9', up = c >= 'A' && c <= 'Z', low = c >= 'a' && c <= 'z';
        int hexl = (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
        if (digit || up || low || c == '+' || c == '/' || c == '_' || c == '-' || c == '=' ||
            c == '\r' || c == '\n')
            k |= C_B64;
        if (digit || hexl) k |= C_HEX | C_SHEX;
        if (c == ' ' || c == ':') k |= C_SHEX;
        if (digit) k |= C_DIG;
        if (up) k |= C_UP;
        if (low) k |= C_LOW;
        if (hexl) k |= C_HEXL;
        if (c == ' ' || c == '(' || c == ')' || c == '+' || c == '.' || c == '-') k |= C_SEP;
        ascii_class[c] = k;
        latin1_class[c] = k;
    }
}

typedef struct {
    int64_t *data;
    Py_ssize_t n, cap;
} Pairs;

static int pairs_push(Pairs *p, int64_t a, int64_t b) {
    if (p->n + 2 > p->cap) {
        Py_ssize_t cap = p->cap ? p->cap * 2 : 64;
        int64_t *grown = (int64_t *)realloc(p->data, (size_t)cap * sizeof(int64_t));
        if (!grown) return -1;
        p->data = grown;
        p->cap = cap;
    }
    p->data[p->n++] = a;
    p->data[p->n++] = b;
    return 0;
}

/* A window [a, b) merged into the last one when `a - last_end < gap`. */
static int pairs_merge(Pairs *p, int64_t a, int64_t b, int64_t gap) {
    if (p->n && a - p->data[p->n - 1] < gap) {
        if (b > p->data[p->n - 1]) p->data[p->n - 1] = b;
        return 0;
    }
    return pairs_push(p, a, b);
}

#define NLISTS 8

/* A letter of a postcode's inward code (`[abd-hjlnp-uw-z]`, either case), or any non-ASCII
 * character (case-insensitive `re` folds a few of them onto ASCII letters). */
static inline int inward_letter(Py_UCS4 ch) {
    if (ch >= 128) return 1;
    ch |= 0x20;
    return ch >= 'a' && ch <= 'z' && ch != 'c' && ch != 'i' && ch != 'k' && ch != 'm' &&
           ch != 'o' && ch != 'v';
}

/* Whether a postcode can have its first digit at `i`: the pattern goes on with an optional
 * letter or digit and an optional space, then a digit and two inward-code letters, so a digit
 * followed by two such letters starts at i + 1, i + 2 or i + 3. Most letter-digit pairs of
 * ordinary output (ids, units, column names) have none, and get no window. */
static inline __attribute__((always_inline)) int postcode_tail(const void *data, const int kind,
                                                              const Py_ssize_t n,
                                                              const Py_ssize_t i) {
    for (Py_ssize_t j = i + 1; j <= i + 3 && j + 2 < n; j++) {
        Py_UCS4 d = PyUnicode_READ(kind, data, j);
        int digit = d < 128 ? (d >= '0' && d <= '9') : Py_UNICODE_ISDECIMAL(d);
        if (digit && inward_letter(PyUnicode_READ(kind, data, j + 1)) &&
            inward_letter(PyUnicode_READ(kind, data, j + 2)))
            return 1;
    }
    return 0;
}

/* Eight bytes of ordinary words (ASCII letters and single spaces, a letter last, the byte before
 * them a letter) in one step of the letter loop of `spans_pass`, with exactly its effect on the
 * runs it tracks: base64 (ends at each space, restarts after it; its case bits), hex (ends at
 * each space and at each letter outside a-f) and spaced hex (goes on through spaces, ends at
 * each letter outside a-f; counts the a-f letters). No run that starts inside the eight bytes
 * can be long enough to be kept before they end (12, 10 and 14 characters), so only the run
 * that comes in can be kept, at the first byte that ends it, and the runs going out start after
 * the last byte that ends them. Returns 0 (nothing done) when the bytes are not of that shape:
 * the loop takes them one at a time. Most words of prose are shorter than eight letters, so a
 * step of letters only would rarely apply; with the spaces, prose goes eight bytes a step. */
static inline __attribute__((always_inline)) int words_block(
    const uint8_t *p, Py_ssize_t at, Pairs *out, Py_ssize_t *b64, unsigned *b64k,
    Py_ssize_t *hex, Py_ssize_t *shex, Py_ssize_t *shl, Py_ssize_t *shd, int *fail) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    (void)p; (void)at; (void)out; (void)b64; (void)b64k; (void)hex; (void)shex; (void)shl;
    (void)shd; (void)fail;
    return 0;
#else
    const uint64_t ones = 0x0101010101010101ULL, tops = 0x8080808080808080ULL;
    const uint64_t low7 = 0x7f7f7f7f7f7f7f7fULL;
    uint64_t w;
    memcpy(&w, p, 8);
    if (w & tops) return 0;
    /* Top bit of each byte in [lo, hi] (bytes below 0x80: the sums do not carry). */
#define IN_RANGE(x, lo, hi) (((x) + ones * (uint64_t)(0x80 - (lo))) & ~((x) + ones * (uint64_t)(0x7f - (hi))) & tops)
    const uint64_t folded = w | (ones * 0x20);
    const uint64_t letter = IN_RANGE(folded, 'a', 'z');
    const uint64_t zero = w ^ (ones * ' ');
    const uint64_t space = ~(((zero & low7) + low7) | zero | low7);
    if ((letter | space) != tops || !(letter >> 63) || (space & (space << 8))) return 0;
    const uint64_t up = IN_RANGE(w, 'A', 'Z');
    const uint64_t hexl = IN_RANGE(folded, 'a', 'f') & letter;
    const uint64_t nonhex = letter & ~hexl;
#undef IN_RANGE
    /* The classes `ascii_class` gives the letters under `m` (a subset of `letter`), OR-ed. */
#define CLASSES(m)                                                                         \
    ((((m) != 0) ? C_B64 : 0u) | (((m) & up) ? C_UP : 0u) | (((m) & ~up) ? C_LOW : 0u) | \
     (((m) & hexl) ? (unsigned)(C_HEX | C_SHEX | C_HEXL) : 0u))
#define FIRST(m) (__builtin_ctzll(m) >> 3)
#define LAST(m) ((63 - __builtin_clzll(m)) >> 3)
#define BELOW(k) ((k) ? ((1ULL << (8 * (k))) - 1) : 0ULL)
#define ABOVE(k) ((k) < 7 ? ~((1ULL << (8 * ((k) + 1))) - 1) : 0ULL)
    if (space) {
        int first = FIRST(space), last = LAST(space);
        unsigned before = *b64k | CLASSES(letter & BELOW(first));
        Py_ssize_t end = at + first;
        if (*b64 >= 0 && end - *b64 >= 12 && (before & (C_UP | C_LOW)) == (C_UP | C_LOW) &&
            pairs_push(&out[0], *b64, end) < 0)
            *fail = 1;
        *b64 = at + last + 1;
        *b64k = CLASSES(letter & ABOVE(last));
    } else {
        *b64k |= CLASSES(letter);
    }
    const uint64_t breaks = space | nonhex;
    if (breaks) {
        int first = FIRST(breaks), last = LAST(breaks);
        Py_ssize_t end = at + first;
        if (*hex >= 0 && end - *hex >= 10 && pairs_push(&out[1], *hex, end) < 0) *fail = 1;
        *hex = last < 7 ? at + last + 1 : -1;
    } else if (*hex < 0) {
        *hex = at;
    }
    if (nonhex) {
        int first = FIRST(nonhex), last = LAST(nonhex);
        if (*shex >= 0) {
            Py_ssize_t k = __builtin_popcountll(hexl & BELOW(first));
            *shl += k;
            *shd += k;
            Py_ssize_t end = at + first;
            if (end - *shex >= 14 && *shl && *shd >= 10 && pairs_push(&out[2], *shex, end) < 0)
                *fail = 1;
        }
        if (last < 7) {
            *shex = at + last + 1;
            *shl = *shd = __builtin_popcountll(hexl & ABOVE(last));
        } else {
            *shex = -1;
        }
    } else {
        if (*shex < 0) *shex = at, *shl = *shd = 0;
        Py_ssize_t k = __builtin_popcountll(hexl);
        *shl += k;
        *shd += k;
    }
#undef CLASSES
#undef FIRST
#undef LAST
#undef BELOW
#undef ABOVE
    return 1;
#endif
}

/* Whether the SSE2 paths below run (`set_simd`: the tests compare them with the scalar code on
 * the same one-byte strings). SSE2 is part of x86-64, so no run-time check is needed. */
static int use_simd = 1;

#if defined(__SSE2__) && !(defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__)
#define HAVE_WORDS64 1
/* Bits of the 64 bytes at `p` (four SSE2 registers) for which `test` (of a register) holds. */
#define SSE_MASK64(x, test)                                                                 \
    ((uint64_t)(uint16_t)_mm_movemask_epi8(test((x)[0])) |                                  \
     ((uint64_t)(uint16_t)_mm_movemask_epi8(test((x)[1])) << 16) |                          \
     ((uint64_t)(uint16_t)_mm_movemask_epi8(test((x)[2])) << 32) |                          \
     ((uint64_t)(uint16_t)_mm_movemask_epi8(test((x)[3])) << 48))

/* The bytes in [lo, hi] (lo <= hi < 0x80): the difference compared unsigned, its top bit
 * flipped for SSE2's signed compare (a byte from 0x80 up is never in range). */
#define SSE_RANGE(v, lo, hi)                                                                \
    _mm_cmplt_epi8(_mm_xor_si128(_mm_sub_epi8((v), _mm_set1_epi8((char)(lo))),                \
                                 _mm_set1_epi8((char)0x80)),                                  \
                   _mm_set1_epi8((char)(0x80 + ((hi) - (lo) + 1))))
#define SSE_LETTER(v) SSE_RANGE(_mm_or_si128((v), _mm_set1_epi8(0x20)), 'a', 'z')
#define SSE_HEXL(v) SSE_RANGE(_mm_or_si128((v), _mm_set1_epi8(0x20)), 'a', 'f')
#define SSE_UP(v) SSE_RANGE((v), 'A', 'Z')
#define SSE_SPACE(v) _mm_cmpeq_epi8((v), _mm_set1_epi8(' '))

/* Whether `m` holds a run of `len` (10, 12 or 14) set bits. */
static inline int bit_run(uint64_t m, int len) {
    m &= m >> 1; /* runs of 2 */
    m &= m >> 2; /* 4 */
    m &= m >> 4; /* 8 */
    if (len == 10) return (m & (m >> 2)) != 0;
    m &= m >> 4; /* 12 */
    if (len == 12) return m != 0;
    return (m & (m >> 2)) != 0; /* 14 */
}

/* The bits strictly between bit `lo` and bit `hi` (lo <= hi <= 63). */
static inline uint64_t between(int lo, int hi) {
    return lo >= hi ? 0 : ((1ULL << hi) - 1) & ~((2ULL << lo) - 1);
}
#define WORDS_STEP 64

/* `words_block` over 64 bytes (read with SSE2): the same shape (ASCII letters and single
 * spaces, a letter last, the byte before them a letter) and the same effect on the base64, hex
 * and spaced hex runs as taking the bytes one at a time. Unlike eight bytes, 64 can hold a
 * whole run long enough to be kept (a word of 12 letters, ten of a-f, ...): such blocks are
 * left to the smaller steps (returns 0, nothing done), so only the run that comes in is kept
 * here, at the first byte that ends it, and the runs going out start after the last byte that
 * ends them. A run coming in may also start in the block (at its first byte, when none was
 * on): it is measured from there. `retry` is set to where the next block may be tried: past
 * the first byte that is no letter or single space, or eight bytes on. */
static inline __attribute__((always_inline)) int words_block64(
    const uint8_t *p, Py_ssize_t at, Pairs *out, Py_ssize_t *b64, unsigned *b64k,
    Py_ssize_t *hex, Py_ssize_t *shex, Py_ssize_t *shl, Py_ssize_t *shd, int *fail,
    Py_ssize_t *retry) {
    __m128i x[4];
    for (int k = 0; k < 4; k++) x[k] = _mm_loadu_si128((const __m128i *)(p + 16 * k));
    /* (A byte outside ASCII is neither a letter nor a space here.) */
    const uint64_t letter = SSE_MASK64(x, SSE_LETTER), space = SSE_MASK64(x, SSE_SPACE);
    const uint64_t bad = ~(letter | space) | (space & (space << 1));
    if (bad) {
        /* No block that holds this byte is of the shape: none is tried before it. */
        *retry = at + __builtin_ctzll(bad) + 1;
        return 0;
    }
    *retry = at + 8;
    if (!(letter >> 63) || *b64 < 0) return 0;
    const uint64_t up = SSE_MASK64(x, SSE_UP), hexl = SSE_MASK64(x, SSE_HEXL);
    const uint64_t nonhex = letter & ~hexl, breaks = space | nonhex;
    /* First and last of each kind of break (a break is there: the last byte is a letter, and
     * a space or a letter outside a-f... or none: then these are not read). */
    const int s0 = space ? __builtin_ctzll(space) : 0, s1 = space ? 63 - __builtin_clzll(space) : 0;
    const int b0 = breaks ? __builtin_ctzll(breaks) : 0, b1 = breaks ? 63 - __builtin_clzll(breaks) : 0;
    const int n0 = nonhex ? __builtin_ctzll(nonhex) : 0, n1 = nonhex ? 63 - __builtin_clzll(nonhex) : 0;
    /* A run that begins and ends inside the block, long enough to be kept: the smaller steps. */
    if (bit_run(~space & between(s0, s1), 12) || bit_run(~breaks & between(b0, b1), 10) ||
        bit_run(~nonhex & between(n0, n1), 14))
        return 0;
#define CASES(m) ((((m) & up) ? (unsigned)C_UP : 0u) | (((m) & ~up) ? (unsigned)C_LOW : 0u))
#define BELOW64(k) ((1ULL << (k)) - 1)
#define ABOVE64(k) ((k) < 63 ? ~((2ULL << (k)) - 1) : 0ULL)
    if (space) {
        const unsigned before = *b64k | CASES(letter & BELOW64(s0));
        const Py_ssize_t end = at + s0;
        if (end - *b64 >= 12 && (before & (C_UP | C_LOW)) == (C_UP | C_LOW) &&
            pairs_push(&out[0], *b64, end) < 0)
            *fail = 1;
        *b64 = at + s1 + 1;
        *b64k = CASES(letter & ABOVE64(s1));
    } else {
        *b64k |= CASES(letter);
    }
    if (breaks) {
        const Py_ssize_t start = *hex >= 0 ? *hex : at, end = at + b0;
        if (end - start >= 10 && pairs_push(&out[1], start, end) < 0) *fail = 1;
        *hex = b1 < 63 ? at + b1 + 1 : -1;
    } else if (*hex < 0) {
        *hex = at;
    }
    if (nonhex) {
        const Py_ssize_t k = __builtin_popcountll(hexl & BELOW64(n0));
        const Py_ssize_t start = *shex >= 0 ? *shex : at, end = at + n0;
        const Py_ssize_t letters = (*shex >= 0 ? *shl : 0) + k, digits = (*shex >= 0 ? *shd : 0) + k;
        if (end - start >= 14 && letters && digits >= 10 && pairs_push(&out[2], start, end) < 0)
            *fail = 1;
        if (n1 < 63) {
            *shex = at + n1 + 1;
            *shl = *shd = __builtin_popcountll(hexl & ABOVE64(n1));
        } else {
            *shex = -1;
        }
    } else {
        if (*shex < 0) *shex = at, *shl = *shd = 0;
        const Py_ssize_t k = __builtin_popcountll(hexl);
        *shl += k;
        *shd += k;
    }
#undef CASES
#undef BELOW64
#undef ABOVE64
    return 1;
}
#endif

/* The pass of text_spans over one string kind (a constant when inlined, so the reads are
 * direct). Returns -1 when out of memory. */
static inline __attribute__((always_inline)) int spans_pass(const void *data, const int kind,
                                                           const Py_ssize_t n, Pairs *out,
                                                           int *has_digit_out) {
    int fail = 0, has_digit = 0;
    const int windows = n >= 2048;

    /* Run state: start (-1: not in a run) and counters. */
    Py_ssize_t b64 = -1, hex = -1, shex = -1, dig = -1, ords = -1, ip = -1;
    /* b64k: the classes seen in the base64 run (only whether it has both cases matters) */
    unsigned b64k = 0;
    Py_ssize_t shl = 0, shd = 0, commas = 0, dots = 0;
    Py_ssize_t num = -1, num_digits = 0; /* number windows: the current inside run */
    Py_ssize_t sep_end = -1; /* end of the separator run being passed through */
    int sep_joins = 0;       /* ... and whether it joins digit groups */
    int prev_letter = 0;
#if defined(HAVE_WORDS64)
    Py_ssize_t no64 = 0; /* no 64-byte step tried before this position (`words_block64`) */
#endif

#define END_RUN_AT(var, cond, list, end)                                     \
    do {                                                                       \
        if (var >= 0) {                                                        \
            if ((cond) && pairs_push(&out[list], var, (end)) < 0) fail = 1;    \
            var = -1;                                                          \
        }                                                                      \
    } while (0)
#define END_RUN(var, cond, list) END_RUN_AT(var, cond, list, i)
#define BOTH_CASES(k) (((k) & (C_UP | C_LOW)) == (C_UP | C_LOW))
#define READ(j) PyUnicode_READ(kind, data, (j))

    for (Py_ssize_t i = 0; i <= n && !fail; i++) {
        Py_UCS4 ch = i < n ? READ(i) : 0;
        uint8_t c = i < n && ch < 128 ? ascii_class[ch] : 0;
        int decimal = 0, space = 0;
        if (i < n) {
            if (ch < 128) {
                decimal = (c & C_DIG) != 0;
                space = ch == ' ' || (ch >= 9 && ch <= 13) || (ch >= 28 && ch <= 31);
            } else {
                decimal = Py_UNICODE_ISDECIMAL(ch);
                space = Py_UNICODE_ISSPACE(ch);
            }
        }
        has_digit |= decimal;

        /* 0 base64 */
        if (c & C_B64) {
            if (b64 < 0) b64 = i, b64k = 0;
            b64k |= c;
        } else END_RUN(b64, i - b64 >= 12 && BOTH_CASES(b64k), 0);
        /* 1 hex */
        if (c & C_HEX) {
            if (hex < 0) hex = i;
        } else END_RUN(hex, i - hex >= 10, 1);
        /* 2 spaced hex */
        if (c & C_SHEX) {
            if (shex < 0) shex = i, shl = shd = 0;
            shl += (c & C_HEXL) != 0;
            shd += (c & C_HEX) != 0;
        } else END_RUN(shex, i - shex >= 14 && shl && shd >= 10, 2);
        /* 3 int */
        if (c & C_DIG) {
            if (dig < 0) dig = i;
        } else END_RUN(dig, i - dig >= 7 && (dig == 0 || READ(dig - 1) != '.') &&
                                (i == n || ch != '.'), 3);
        /* 5 ords */
        if (decimal || space || ch == ',') {
            if (ords < 0) ords = i, commas = 0;
            commas += ch == ',';
        } else END_RUN_AT(ords, commas >= 5, 5, i < n ? i + 1 : n);
        /* 6 ip */
        if (i < n && (decimal || ch == '.')) {
            if (ip < 0) ip = i, dots = 0;
            dots += ch == '.';
        } else END_RUN_AT(ip, dots >= 3, 6, i < n ? i + 1 : n);
        /* 7 postcode */
        if (decimal && prev_letter && postcode_tail(data, kind, n, i)) {
            int64_t a = i - 2 < 0 ? 0 : i - 2, b = i + 9 > n ? n : i + 9;
            if (pairs_merge(&out[7], a, b, 1) < 0) fail = 1;
        }
        prev_letter = i < n && (ch >= 128 || (c & (C_UP | C_LOW)));
        /* 4 number windows: runs of digits and of the separator runs that join digit groups
         * (one separator, or two with a parenthesis), with >= 9 digits. */
        if (windows) {
            int inside = 0;
            if (c & C_DIG) {
                inside = 1;
            } else if (c & C_SEP) {
                if (i >= sep_end) {
                    /* The first character of a separator run: measure the run. */
                    Py_ssize_t j = i;
                    Py_UCS4 r;
                    while (j < n && (r = READ(j)) < 128 && (ascii_class[r] & C_SEP)) j++;
                    sep_joins = j - i == 1 ||
                                (j - i == 2 && (ch == '(' || ch == ')' || READ(i + 1) == '(' ||
                                                READ(i + 1) == ')'));
                    sep_end = j;
                }
                inside = sep_joins;
            }
            if (inside) {
                if (num < 0) num = i, num_digits = 0;
                num_digits += (c & C_DIG) != 0;
            } else if (num >= 0) {
                if (num_digits >= 9) {
                    int64_t a = num - 2 < 0 ? 0 : num - 2, b = i + 2 > n ? n : i + 2;
                    if (pairs_merge(&out[4], a, b, 64) < 0) fail = 1;
                }
                num = -1;
            }
        }
        /* Fast paths. After an ASCII letter (or decimal digit) the runs above are all in a
         * known state, and each following letter (digit) only moves counters: a run of them is
         * taken in a tight loop with exactly the steps the general code above would take.
         * Letters: base64 goes on (the cases seen noted); hex and spaced hex go on through a-f
         * and end at any other letter; every other run has already ended at `i`, and no
         * postcode or number window starts. Digits: every run but postcode's goes on (spaced
         * hex and number windows count them); prev_letter is clear. Spaces: see below. */
        if (i < n && ch < 128 && (c & (C_UP | C_LOW))) {
            Py_ssize_t j = i + 1;
            int wide = 0; /* the last step was eight bytes or more: try 64 */
            for (; j < n; j++) {
#if defined(HAVE_WORDS64)
                /* Prose goes 64 bytes a step, tried only after a step of eight (so that the
                 * short letter runs of tables, JSON and code do not pay for a try each); after
                 * a block that is not of that shape, eight bytes (or one) at a time until past
                 * the byte that ends the shape, or past the block's first eight bytes. */
                if (wide && kind == PyUnicode_1BYTE_KIND && j + WORDS_STEP <= n && j >= no64 &&
                    use_simd) {
                    if (words_block64((const uint8_t *)data + j, j, out, &b64, &b64k, &hex,
                                      &shex, &shl, &shd, &fail, &no64)) {
                        j += WORDS_STEP - 1; /* (and the loop's j++) */
                        continue;
                    }
                }
#endif
                if (kind == PyUnicode_1BYTE_KIND && j + 8 <= n &&
                    words_block((const uint8_t *)data + j, j, out, &b64, &b64k, &hex, &shex,
                                &shl, &shd, &fail)) {
                    j += 7; /* (and the loop's j++) */
                    wide = 1;
                    continue;
                }
                wide = 0;
                Py_UCS4 r = READ(j);
                /* (A Latin-1 character has class 0 in latin1_class: it ends the loop below.) */
                if (kind != PyUnicode_1BYTE_KIND && r >= 128) break;
                uint8_t k = kind == PyUnicode_1BYTE_KIND ? latin1_class[r] : ascii_class[r];
                if (!(k & (C_UP | C_LOW))) {
                    /* One space between two letters (words): the space ends base64 and hex,
                     * starts or goes on with spaced hex, and starts an ords run and a number
                     * window that the letter after it ends empty; that letter starts base64
                     * again. Then the letter is taken below, as the general code would. */
                    if (r != ' ' || j + 1 >= n) break;
                    Py_UCS4 x = READ(j + 1);
                    if (x >= 128 || !(ascii_class[x] & (C_UP | C_LOW))) break;
                    END_RUN_AT(b64, j - b64 >= 12 && BOTH_CASES(b64k), 0, j);
                    END_RUN_AT(hex, j - hex >= 10, 1, j);
                    if (shex < 0) shex = j, shl = shd = 0;
                    j++;
                    k = ascii_class[x];
                    b64 = j, b64k = 0;
                }
                b64k |= k;
                if (k & C_HEXL) {
                    if (hex < 0) hex = j;
                    if (shex < 0) shex = j, shl = shd = 0;
                    shl++;
                    shd++;
                } else if ((hex & shex) >= 0) {
                    /* (Either run is on: of two negative starts the AND is negative.) */
                    END_RUN_AT(hex, j - hex >= 10, 1, j);
                    END_RUN_AT(shex, j - shex >= 14 && shl && shd >= 10, 2, j);
                }
            }
            i = j - 1;
        } else if (c & C_DIG) {
            Py_ssize_t j = i + 1;
            while (j < n) {
                Py_UCS4 r = READ(j);
                if (r < '0' || r > '9') break;
                j++;
            }
            shd += j - i - 1;
            num_digits += j - i - 1;
            i = j - 1;
        } else if (ch == ' ') {
            /* Spaces (table columns): after the first, a space changes nothing. Every run it
             * ends has ended at the first; spaced hex, ords and a number window that joins
             * through this separator run have started or go on, counting nothing; its
             * separator run was measured at its first character. */
            Py_ssize_t j = i + 1;
            while (j < n && READ(j) == ' ') j++;
            i = j - 1;
        }
    }
#undef END_RUN
#undef BOTH_CASES
#undef END_RUN_AT
#undef READ
    *has_digit_out = has_digit;
    return fail ? -1 : 0;
}

/* Texts at least this long are passed over without the GIL. */
#define SPANS_NOGIL_CHARS 16384

static PyObject *py_text_spans(PyObject *mod, PyObject *arg) {
    (void)mod;
    if (!PyUnicode_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "text_spans needs a str");
        return NULL;
    }
    if (PyUnicode_READY(arg) < 0) return NULL;
    const int kind = PyUnicode_KIND(arg);
    const void *data = PyUnicode_DATA(arg);
    const Py_ssize_t n = PyUnicode_GET_LENGTH(arg);
    Pairs out[NLISTS];
    memset(out, 0, sizeof(out));
    int has_digit = 0, fail;
    /* The pass reads only the str's data (immutable, and `arg` is held) and the Unicode
     * tables, so a long text lets go of the GIL: the identifier passes' threads and the
     * sentry's hashing go on meanwhile (a megabyte takes about a millisecond here). */
    PyThreadState *save = n >= SPANS_NOGIL_CHARS ? PyEval_SaveThread() : NULL;
    switch (kind) {
        case PyUnicode_1BYTE_KIND:
            fail = spans_pass(data, PyUnicode_1BYTE_KIND, n, out, &has_digit);
            break;
        case PyUnicode_2BYTE_KIND:
            fail = spans_pass(data, PyUnicode_2BYTE_KIND, n, out, &has_digit);
            break;
        default:
            fail = spans_pass(data, PyUnicode_4BYTE_KIND, n, out, &has_digit);
            break;
    }
    if (save) PyEval_RestoreThread(save);
    if (fail) {
        for (int k = 0; k < NLISTS; k++) free(out[k].data);
        return PyErr_NoMemory();
    }
    PyObject *res = PyTuple_New(NLISTS + 1);
    for (int k = 0; res && k < NLISTS; k++) {
        PyObject *b = PyBytes_FromStringAndSize((const char *)out[k].data,
                                                out[k].n * (Py_ssize_t)sizeof(int64_t));
        if (!b) {
            Py_CLEAR(res);
            break;
        }
        PyTuple_SET_ITEM(res, k, b);
    }
    for (int k = 0; k < NLISTS; k++) free(out[k].data);
    if (res) PyTuple_SET_ITEM(res, NLISTS, PyBool_FromLong(has_digit));
    return res;
}

/* ------------------------------------------------------------------ dense runs
 *
 * dense_runs(text, min_len) -> int64 pairs: the runs of printable non-space ASCII ('!'..'~')
 * at least min_len (>= 12) long that hold an upper-case letter: where base32, base85, Ascii85
 * and uuencoded lines can be (`bedside.policy._encodings`). A one-byte str is passed over in
 * 8-byte windows at a stride of 4: a run of 12 or more holds such a window wholly, so a window
 * with a space or a non-ASCII byte in it is skipped in a few operations, and prose costs about a
 * tenth of a millisecond per megabyte. */
static inline int dense_char(Py_UCS4 c) { return c >= 0x21 && c <= 0x7e; }


/* Whether a dense run of a one-byte str can be an encoding (`_encodings.dense_kept`): not a
 * word (letters, one of them lower-case, with other characters only before and after them:
 * "International,", "(Significant).", no digit); not numbers (digits more than 40 % with a
 * '.': "1.234560E+00,-2.5E-01"); and in the alphabet of one of the decoders that can read it:
 * base32 (A-Z, 2-7, '=' at the end); base85 or Ascii85 with a lower-case letter (their
 * encodings of text have one), Ascii85 only if no group of five starts with a lower-case letter
 * (a group of text that starts with a byte up to 0xC5, i.e. ASCII and the Latin scripts' UTF-8,
 * starts with '!'..'`'); uuencode (no lower case, no '{|}~') holding a character only it of
 * these would have (not "UUID=9F3A...", "MAX_LEN=512"). CSV rows, JSON and HTML fail them all
 * mostly. One table look-up per character (a megabyte of base64 is one run). */
enum {
    D_LOW = 1, D_DIG = 2, D_UP = 4, D_DOT = 8, D_UU = 16, D_NOT_B32 = 32, D_NOT_B85 = 64,
    D_NOT_A85 = 128, D_NOT_UU = 256
};
static uint16_t dense_class[256];

static void init_dense_class(void) {
    const char *b85 =
        "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!#$%&()*+-;<=>?@^_`{|}~";
    for (int c = 0; c < 256; c++) {
        uint16_t k = 0;
        if (c >= 'a' && c <= 'z') k = D_LOW;
        else if (c >= '0' && c <= '9') k = D_DIG;
        else if (c >= 'A' && c <= 'Z') k = D_UP;
        if (c == '.') k |= D_DOT;
        if (c && strchr("!\"#$%&'(),;<>?@[\\]^`", c)) k |= D_UU;
        if (!((c >= 'A' && c <= 'Z') || (c >= '2' && c <= '7'))) k |= D_NOT_B32;
        if (!(c && strchr(b85, c))) k |= D_NOT_B85;
        if (!((c >= '!' && c <= 'u') || c == 'y' || c == 'z')) k |= D_NOT_A85;
        if (c < ' ' || c > '`') k |= D_NOT_UU;
        dense_class[c] = k;
    }
}

static int dense_kept(const uint8_t *p, Py_ssize_t a, Py_ssize_t b) {
    /* One tight pass for the classes seen and the digits; the rarer cases look again. */
    unsigned seen = 0;
    Py_ssize_t digits = 0;
    for (Py_ssize_t j = a; j < b; j++) {
        unsigned k = dense_class[p[j]];
        seen |= k;
        digits += (k >> 1) & 1; /* D_DIG */
    }
    if ((seen & D_DOT) && digits * 5 > (b - a) * 2) return 0;
    if ((seen & D_LOW) && !digits) {
        /* A word unless something other than a letter lies between its first and last. */
        Py_ssize_t first = a, last = b - 1;
        while (!(dense_class[p[first]] & (D_LOW | D_UP))) first++;
        while (!(dense_class[p[last]] & (D_LOW | D_UP))) last--;
        int inner = 0;
        for (Py_ssize_t j = first; j < last && !inner; j++)
            inner = (dense_class[p[j]] & (D_LOW | D_UP)) == 0;
        if (!inner) return 0;
    }
    if (seen & D_NOT_B32) {
        /* base32 after all when only its '=' padding is outside A-Z, 2-7. */
        Py_ssize_t pad = b;
        while (pad > a && p[pad - 1] == '=') pad--;
        int b32 = pad < b;
        for (Py_ssize_t j = a; j < pad && b32; j++) b32 = !(dense_class[p[j]] & D_NOT_B32);
        if (b32) return 1;
    } else {
        return 1;
    }
    if (seen & D_LOW) {
        if (!(seen & D_NOT_B85)) return 1;
        /* Ascii85's groups of five start after an Adobe "<~", whose '~'s (and the closing
         * "~>") are not in its alphabet. */
        int adobe = b - a >= 4 && p[a] == '<' && p[a + 1] == '~' && p[b - 2] == '~' &&
                    p[b - 1] == '>';
        Py_ssize_t lo = adobe ? a + 2 : a, hi = adobe ? b - 2 : b;
        for (Py_ssize_t j = lo; j < hi; j++) {
            unsigned k = dense_class[p[j]];
            if ((k & D_NOT_A85) || ((j - lo) % 5 == 0 && (k & D_LOW))) return 0;
        }
        return 1;
    }
    return (seen & D_UU) && !(seen & D_NOT_UU);
}

/* Top bit of each byte of `w` (bytes below 0x80) in [lo, hi]. */
#define DENSE_ONES 0x0101010101010101ULL
#define DENSE_TOPS 0x8080808080808080ULL
#define BYTES_IN(w, lo, hi)                                                 \
    (((w) + DENSE_ONES * (uint64_t)(0x80 - (lo))) &                         \
     ~((w) + DENSE_ONES * (uint64_t)(0x7f - (hi))) & DENSE_TOPS)

static PyObject *py_dense_runs(PyObject *mod, PyObject *args) {
    (void)mod;
    PyObject *text;
    Py_ssize_t min_len;
    if (!PyArg_ParseTuple(args, "Un", &text, &min_len)) return NULL;
    if (min_len < 12) min_len = 12;
    const int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    const Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    Pairs out = {0};
    int fail = 0;
    if (kind == PyUnicode_1BYTE_KIND) {
        const uint8_t *p = (const uint8_t *)data;
        Py_ssize_t i = 0;
#if defined(__SSE2__)
        Py_ssize_t dense_retry = 0, dense_backoff = 32; /* no skip tried before dense_retry */
#endif
        while (i + 8 <= n && !fail) {
#if defined(__SSE2__)
            /* 32 bytes a step with SSE2 while no run could be kept: a run of 12 or more with
             * a window of eight at one of the next eight positions (i, i + 4, ... i + 28)
             * holds 12 dense bytes in a row within [i - 4, i + 40), so when [i - 12, i + 52)
             * holds none the eight windows are all skipped, as the loop below would. */
            if (use_simd && i >= dense_retry && i >= 12 && i + 52 <= n) {
                const __m128i flip = _mm_set1_epi8((char)0x80), lo = _mm_set1_epi8(0x21);
                const __m128i width = _mm_set1_epi8((char)(0x80 + (0x7e - 0x21 + 1)));
                uint64_t m = 0;
                for (int k = 0; k < 4; k++) {
                    const __m128i x = _mm_loadu_si128((const __m128i *)(p + i - 12 + 16 * k));
                    const __m128i in = _mm_cmplt_epi8(_mm_xor_si128(_mm_sub_epi8(x, lo), flip), width);
                    m |= (uint64_t)(uint16_t)_mm_movemask_epi8(in) << (16 * k);
                }
                m &= m >> 1;
                m &= m >> 2;
                m &= m >> 4;
                m &= m >> 4; /* bit k: 12 dense bytes from k */
                if (!m) {
                    dense_backoff = 32;
                    i += 32;
                    continue;
                }
                /* Dense text (CSV, JSON): the next try 32 bytes on, then 64, ... up to 512
                 * while they fail. */
                dense_retry = i + dense_backoff;
                if (dense_backoff < 512) dense_backoff *= 2;
            }
#endif
            uint64_t w;
            memcpy(&w, p + i, 8);
            if ((w & DENSE_TOPS) || BYTES_IN(w, 0x21, 0x7e) != DENSE_TOPS) {
                i += 4;
                continue;
            }
            /* A run: widen it (eight bytes a step to the right), noting capitals. */
            uint64_t up = BYTES_IN(w, 'A', 'Z');
            Py_ssize_t a = i, b = i + 8;
            while (a > 0 && dense_char(p[a - 1])) {
                a--;
                up |= p[a] >= 'A' && p[a] <= 'Z';
            }
            while (b + 8 <= n) {
                uint64_t x;
                memcpy(&x, p + b, 8);
                if ((x & DENSE_TOPS) || BYTES_IN(x, 0x21, 0x7e) != DENSE_TOPS) break;
                up |= BYTES_IN(x, 'A', 'Z');
                b += 8;
            }
            while (b < n && dense_char(p[b])) {
                up |= p[b] >= 'A' && p[b] <= 'Z';
                b++;
            }
            if (up && b - a >= min_len && dense_kept(p, a, b) && pairs_push(&out, a, b) < 0)
                fail = 1;
            i = (b + 4) & ~(Py_ssize_t)3;
        }
        /* A run of min_len (>= 12) holds a whole window at a multiple of 4: the tail after
         * the last window can only end a run found above. */
    } else {
        Py_ssize_t a = -1;
        const uint16_t *u2 = (const uint16_t *)data;
        const uint64_t ones16 = 0x0001000100010001ULL, tops16 = 0x0080008000800080ULL;
        const uint64_t high16 = 0xFF80FF80FF80FF80ULL;
        for (Py_ssize_t i = 0; i <= n && !fail; i++) {
            if (kind == PyUnicode_2BYTE_KIND && a < 0 && (i & 3) == 0 && i + 8 <= n) {
                /* Outside a run, eight UCS-2 units at a stride of four, four a word (as the
                 * one-byte path does with bytes): a run of 12 or more holds such a window. */
                uint64_t w0, w1;
                memcpy(&w0, u2 + i, 8);
                memcpy(&w1, u2 + i + 4, 8);
                uint64_t in0 = (w0 + ones16 * (0x80 - 0x21)) & ~(w0 + ones16 * (0x7f - 0x7e));
                uint64_t in1 = (w1 + ones16 * (0x80 - 0x21)) & ~(w1 + ones16 * (0x7f - 0x7e));
                if (((w0 | w1) & high16) || (in0 & tops16) != tops16 || (in1 & tops16) != tops16) {
                    i += 3; /* (and the loop's i++) */
                    continue;
                }
                /* A run: back to its start, then on one unit at a time. */
                a = i;
                while (a > 0 && dense_char(u2[a - 1])) a--;
                i += 7;
                continue;
            }
            int d = i < n && dense_char(PyUnicode_READ(kind, data, i));
            if (d && a < 0) a = i;
            if (!d && a >= 0) {
                if (i - a >= min_len) {
                    /* The run is ASCII: its bytes, for the same checks as a one-byte str's. */
                    uint8_t *run = (uint8_t *)malloc((size_t)(i - a));
                    int up = 0;
                    if (!run) {
                        fail = 1;
                        break;
                    }
                    for (Py_ssize_t j = a; j < i; j++) {
                        run[j - a] = (uint8_t)PyUnicode_READ(kind, data, j);
                        up |= run[j - a] >= 'A' && run[j - a] <= 'Z';
                    }
                    if (up && dense_kept(run, 0, i - a) && pairs_push(&out, a, i) < 0) fail = 1;
                    free(run);
                }
                a = -1;
            }
        }
    }
    if (fail) {
        free(out.data);
        return PyErr_NoMemory();
    }
    PyObject *res = PyBytes_FromStringAndSize((const char *)out.data,
                                              out.n * (Py_ssize_t)sizeof(int64_t));
    free(out.data);
    return res;
}
#undef BYTES_IN
#undef DENSE_ONES
#undef DENSE_TOPS

static PyObject *py_alnum_table(PyObject *mod, PyObject *unused) {
    return PyBytes_FromStringAndSize((const char *)alnum, 65536);
}

/* ------------------------------------------------------------------ matching rules
 *
 * keep_spans(text, starts, ends, date) is `_matching.keep_match` over every match of a text at
 * once (character offsets, int64 buffers; `date` one byte per match). It answers 0 (drop) or
 * 1 (keep), or 2 (undecided) where the answer would read a character outside ASCII: Unicode's
 * digits and white space are many, and those few matches go to `keep_match` itself. On ASCII,
 * `str.isdigit` and `\d` are [0-9], `[^\W\d_]` is [A-Za-z], and `str.strip` removes
 * ' ', \t \n \v \f \r and \x1c-\x1f. */

#define UNDECIDED 2

static inline int a_digit(Py_UCS4 c) { return c >= '0' && c <= '9'; }
static inline int a_letter(Py_UCS4 c) { return (c | 0x20) >= 'a' && (c | 0x20) <= 'z'; }
static inline int a_space(Py_UCS4 c) { return c == ' ' || (c >= 9 && c <= 13) || (c >= 28 && c <= 31); }
static inline int a_word(Py_UCS4 c) { return a_digit(c) || a_letter(c) || c == '_'; }

/* `date_shaped(text[start:end], text[:start])` for an ASCII span that is not all digits. */
static int date_shaped_at(const void *data, int kind, Py_ssize_t start, Py_ssize_t end) {
    Py_ssize_t ntok = 0, first_len = 0;
    int has_letter = 0;
    /* The distinct separator: stripped, backslashes removed; -1 length: none seen yet. */
    char sep[16], cur[16];
    Py_ssize_t sep_len = -1, cur_len;
    int mixed = 0;
    Py_ssize_t i = start;
    Py_ssize_t prev_end = -1;
    while (i < end) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (a_digit(c) || a_letter(c)) {
            int digit = a_digit(c);
            Py_ssize_t j = i + 1;
            while (j < end) {
                Py_UCS4 d = PyUnicode_READ(kind, data, j);
                if (digit ? !a_digit(d) : !a_letter(d)) break;
                j++;
            }
            if (!digit) has_letter = 1;
            if (ntok == 0) first_len = j - i;
            if (prev_end >= 0) {
                /* The piece between the previous token and this one. */
                Py_ssize_t a = prev_end, b = i;
                while (a < b && a_space(PyUnicode_READ(kind, data, a))) a++;
                while (b > a && a_space(PyUnicode_READ(kind, data, b - 1))) b--;
                cur_len = 0;
                for (Py_ssize_t k = a; k < b; k++) {
                    Py_UCS4 d = PyUnicode_READ(kind, data, k);
                    if (d == '\\') continue;
                    if (cur_len == (Py_ssize_t)sizeof(cur)) return UNDECIDED;
                    cur[cur_len++] = (char)d;
                }
                if (sep_len < 0) {
                    memcpy(sep, cur, (size_t)cur_len);
                    sep_len = cur_len;
                } else if (cur_len != sep_len || memcmp(sep, cur, (size_t)cur_len) != 0) {
                    mixed = 1;
                }
            }
            ntok++;
            prev_end = j;
            i = j;
        } else {
            i++;
        }
    }
    if (ntok < 2 || has_letter) return 1;
    if (mixed) return 0;
    if (sep_len == 1 && (sep[0] == '-' || sep[0] == '/' || sep[0] == '.')) return 1;
    if (!(sep_len == 1 && sep[0] == ',' && first_len == 4)) return 0;
    /* A constructor, year first: `before.rstrip().endswith("(")`. */
    Py_ssize_t k = start;
    while (k > 0) {
        Py_UCS4 d = PyUnicode_READ(kind, data, k - 1);
        if (d >= 128) return UNDECIDED;
        if (!a_space(d)) return d == '(';
        k--;
    }
    return 0;
}

static int keep_one(const void *data, int kind, Py_ssize_t n, Py_ssize_t start, Py_ssize_t end,
                    int date) {
    if (start < 0 || end > n || start > end) return UNDECIDED;
    int all_digit = end > start;
    for (Py_ssize_t i = start; i < end; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c >= 128) return UNDECIDED;
        if (!a_digit(c)) all_digit = 0;
    }
    if (all_digit) {
        if (start >= 2 && PyUnicode_READ(kind, data, start - 1) == '.') {
            Py_UCS4 c = PyUnicode_READ(kind, data, start - 2);
            if (c >= 128) return UNDECIDED;
            if (a_digit(c)) return 0; /* the fraction of 0.123456 */
        }
        /* 4012345.25 is a statistic; 4012345.0 may be an id column read as float. */
        if (end + 1 >= n || PyUnicode_READ(kind, data, end) != '.') return 1;
        for (Py_ssize_t i = end + 1; i < n; i++) {
            Py_UCS4 c = PyUnicode_READ(kind, data, i);
            if (c >= 128) return UNDECIDED;
            if (!a_digit(c)) return 1; /* the fraction ended with zeros only (or was empty) */
            if (c != '0') return 0;
        }
        return 1;
    }
    if (!date) return 1;
    return date_shaped_at(data, kind, start, end);
}

static PyObject *py_keep_spans(PyObject *mod, PyObject *args) {
    (void)mod;
    PyObject *text;
    Py_buffer sb, eb, db;
    if (!PyArg_ParseTuple(args, "Uy*y*y*", &text, &sb, &eb, &db)) return NULL;
    PyObject *res = NULL;
    Py_ssize_t m = sb.len / (Py_ssize_t)sizeof(int64_t);
    if (eb.len != sb.len || db.len != m) {
        PyErr_SetString(PyExc_ValueError, "keep_spans: starts, ends and date differ in length");
        goto done;
    }
    res = PyBytes_FromStringAndSize(NULL, m);
    if (!res) goto done;
    {
        const int kind = PyUnicode_KIND(text);
        const void *data = PyUnicode_DATA(text);
        const Py_ssize_t n = PyUnicode_GET_LENGTH(text);
        const int64_t *s = (const int64_t *)sb.buf, *e = (const int64_t *)eb.buf;
        const uint8_t *d = (const uint8_t *)db.buf;
        char *out = PyBytes_AS_STRING(res);
        for (Py_ssize_t i = 0; i < m; i++)
            out[i] = (char)keep_one(data, kind, n, (Py_ssize_t)s[i], (Py_ssize_t)e[i], d[i] != 0);
    }
done:
    PyBuffer_Release(&sb);
    PyBuffer_Release(&eb);
    PyBuffer_Release(&db);
    return res;
}


/* ------------------------------------------------------------------ dates printed in a text
 *
 * dates_in_text(text) -> (matches, windows): what `_matching._DATE_IN_TEXT.finditer(text)`
 * finds, line by line. A line is matched here, exactly as the pattern would (its `(start, end)`
 * pairs in `matches`), unless it holds an alphanumeric character outside ASCII: such a line is
 * returned whole in `windows`, for the pattern itself. No match of the pattern crosses a
 * newline, and what it reads before and after a match (`(?<![\w.])`, `(?!\w)`) is a newline
 * or the text's end at a line's ends, so matching line by line finds the same.
 *
 * The pattern, on ASCII (IGNORECASE; \d [0-9], \w [A-Za-z0-9_]), from a start not preceded by
 * [\w.], takes the first of: yyyy-m-d; d/m/yyyy with one of / . - twice; eight digits; d month
 * yyyy (' ' or '-' on both sides of the month); month d, yyyy; and none may be followed by \w.
 * Digit groups are maximal runs here: a start is never preceded by a digit, the pattern's
 * \d{1,2} must be followed by a non-digit, and \d{4} / \d{8} by a non-word character. */

static const char *const MONTHS3[12] = {"jan", "feb", "mar", "apr", "may", "jun",
                                        "jul", "aug", "sep", "oct", "nov", "dec"};

/* Length of the run of ASCII digits at i (< n). */
static inline Py_ssize_t digit_run(const Py_UCS1 *t, Py_ssize_t i, Py_ssize_t n) {
    Py_ssize_t j = i;
    while (j < n && a_digit(t[j])) j++;
    return j - i;
}

/* A month name at i: three letters naming a month, then any letters; its end, or -1. */
static inline Py_ssize_t month_at(const Py_UCS1 *t, Py_ssize_t i, Py_ssize_t n) {
    if (i + 3 > n) return -1;
    if (!a_letter(t[i]) || !a_letter(t[i + 1]) || !a_letter(t[i + 2])) return -1;
    char w[3] = {(char)(t[i] | 0x20), (char)(t[i + 1] | 0x20), (char)(t[i + 2] | 0x20)};
    int found = 0;
    for (int k = 0; k < 12 && !found; k++)
        found = w[0] == MONTHS3[k][0] && w[1] == MONTHS3[k][1] && w[2] == MONTHS3[k][2];
    if (!found) return -1;
    Py_ssize_t j = i + 3;
    while (j < n && a_letter(t[j])) j++;
    return j;
}

/* A year at i: exactly four digits, then no word character (n: the line's end). Its end or -1. */
static inline Py_ssize_t year_at(const Py_UCS1 *t, Py_ssize_t i, Py_ssize_t n) {
    if (i >= n || digit_run(t, i, n) != 4) return -1;
    if (i + 4 < n && a_word(t[i + 4])) return -1;
    return i + 4;
}

/* The end of a match starting at p (not preceded by [\w.]), or -1. */
static Py_ssize_t date_match_at(const Py_UCS1 *t, Py_ssize_t p, Py_ssize_t n) {
    Py_UCS1 c = t[p];
    if (a_digit(c)) {
        Py_ssize_t r = digit_run(t, p, n), q = p + r;
        Py_UCS1 after = q < n ? t[q] : 0;
        /* yyyy-m-d */
        if (r == 4 && after == '-') {
            Py_ssize_t r2 = digit_run(t, q + 1, n);
            Py_ssize_t q2 = q + 1 + r2;
            if ((r2 == 1 || r2 == 2) && q2 < n && t[q2] == '-') {
                Py_ssize_t r3 = digit_run(t, q2 + 1, n), q3 = q2 + 1 + r3;
                if ((r3 == 1 || r3 == 2) && !(q3 < n && a_word(t[q3]))) return q3;
            }
        }
        if (r == 1 || r == 2) {
            /* d/m/yyyy */
            if (after == '/' || after == '.' || after == '-') {
                Py_ssize_t r2 = digit_run(t, q + 1, n), q2 = q + 1 + r2;
                if ((r2 == 1 || r2 == 2) && q2 < n && t[q2] == after) {
                    Py_ssize_t y = year_at(t, q2 + 1, n);
                    if (y >= 0) return y;
                }
            }
        }
        /* eight digits */
        if (r == 8 && !(q < n && a_word(after))) return q;
        /* d month yyyy */
        if ((r == 1 || r == 2) && (after == ' ' || after == '-')) {
            Py_ssize_t m = month_at(t, q + 1, n);
            if (m >= 0 && m < n && (t[m] == ' ' || t[m] == '-')) {
                Py_ssize_t y = year_at(t, m + 1, n);
                if (y >= 0) return y;
            }
        }
        return -1;
    }
    /* month d, yyyy */
    Py_ssize_t m = month_at(t, p, n);
    if (m < 0 || m >= n || t[m] != ' ') return -1;
    Py_ssize_t r = digit_run(t, m + 1, n), q = m + 1 + r;
    if (!(r == 1 || r == 2)) return -1;
    if (q < n && t[q] == ',') q++;
    if (!(q < n && t[q] == ' ')) return -1;
    return year_at(t, q + 1, n);
}

/* The matches of the date pattern in one line `t[0, len)` read as ASCII, at `base` in the text. */
static int dates_in_line(const Py_UCS1 *t, Py_ssize_t len, Py_ssize_t base, Pairs *found) {
    Py_ssize_t i = 0;
    while (i < len) {
        Py_UCS1 c = t[i];
        if (a_digit(c) || a_letter(c)) {
            if (i == 0 || !(a_word(t[i - 1]) || t[i - 1] == '.')) {
                Py_ssize_t end = date_match_at(t, i, len);
                if (end > i) {
                    if (pairs_push(found, base + i, base + end) < 0) return -1;
                    i = end;
                    continue;
                }
            }
            /* No match starts inside a run of word characters (\w before it). */
            i++;
            while (i < len && a_word(t[i])) i++;
            continue;
        }
        i++;
    }
    return 0;
}

/* The storage kind's characters as bytes, the ones outside ASCII as 0x80 (branch-free, so the
 * compiler vectorises it). */
#define NARROW_KIND(T_, NAME)                                                                \
    static void NAME(const T_ *src, Py_ssize_t n, uint8_t *dst) {                            \
        for (Py_ssize_t i = 0; i < n; i++) dst[i] = src[i] < 128 ? (uint8_t)src[i] : 0x80;   \
    }
NARROW_KIND(Py_UCS2, narrow_2)
NARROW_KIND(Py_UCS4, narrow_4)
#undef NARROW_KIND

/* Can the maximal run of ASCII digits t[a, b) (of a text t[0, n)) be where a match of the
 * pattern has its year or its eight digits? Every match holds one of: eight digits alone; a
 * year (four digits alone) first, then '-' and a digit (yyyy-m-d); or a year last, after
 * `d/m/` (one of / . - twice, one or two digits before each), after `d month ` (a letter, then
 * ' ' or '-') or after `month d, ` / `month d ` (a comma or a digit, then ' '). So a line with
 * no such run holds no match: floats (`0.6931`), counts and ids are passed over. */
static inline int date_anchor(const uint8_t *t, Py_ssize_t a, Py_ssize_t b, Py_ssize_t n) {
    if (b - a == 8) return 1;
    if (b - a != 4) return 0;
    if (b + 1 < n && t[b] == '-' && a_digit(t[b + 1])) return 1;
    if (a < 2) return 0;
    uint8_t p = t[a - 1], q = t[a - 2];
    if ((p == ' ' || p == '-') && a_letter(q)) return 1;
    if (p == ' ' && (q == ',' || a_digit(q))) return 1;
    if (p == '/' || p == '.' || p == '-') {
        if (!a_digit(q) || a < 3) return 0;
        uint8_t r = t[a - 3];
        return r == p || (a >= 4 && a_digit(r) && t[a - 4] == p);
    }
    return 0;
}

/* 1: an ASCII digit, 2: a byte >= 0x80, 3: a newline, 0: anything else. */
static uint8_t date_scan_class[256];

/* The line t[ls, le) of the text (kind/data: the str): to `other` when it holds an alphanumeric
 * character outside ASCII, else matched read as ASCII, where a character outside ASCII (not
 * alphanumeric) plays no part in the pattern, exactly like '#' (every character the
 * case-insensitive [a-z] takes is a letter, and \w and \d read `str.isalnum`). */
static int date_line(const uint8_t *t, Py_ssize_t ls, Py_ssize_t le, int kind, const void *data,
                     Pairs *found, Pairs *other, uint8_t **scratch, Py_ssize_t *cap) {
    Py_ssize_t len = le - ls;
    int high = 0;
    for (Py_ssize_t j = ls; j < le && !high; j++) high = t[j] >= 0x80;
    if (!high) return dates_in_line(t + ls, len, ls, found);
    for (Py_ssize_t j = ls; j < le; j++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, j);
        if (c >= 128 && Py_UNICODE_ISALNUM(c)) return pairs_push(other, ls, le);
    }
    if (len > *cap) {
        uint8_t *grown = (uint8_t *)realloc(*scratch, (size_t)len);
        if (!grown) return -1;
        *scratch = grown;
        *cap = len;
    }
    for (Py_ssize_t j = 0; j < len; j++) (*scratch)[j] = t[ls + j] < 128 ? t[ls + j] : '#';
    return dates_in_line(*scratch, len, ls, found);
}

/* The date matches of a str (`found`) and the lines left to the pattern (`other`). No match
 * crosses a newline, so lines are decided one by one, and only the lines that can hold a match
 * (a digit run `date_anchor` takes) or a character outside ASCII are read at all: the text is
 * passed through once looking for those, and each such line is decided whole (`date_line`).
 * Returns -1 when out of memory. */
static int dates_of(PyObject *arg, Pairs *found, Pairs *other) {
    const int kind = PyUnicode_KIND(arg);
    const void *data = PyUnicode_DATA(arg);
    const Py_ssize_t n = PyUnicode_GET_LENGTH(arg);
    const uint8_t *t;
    uint8_t *narrow = NULL, *scratch = NULL;
    Py_ssize_t cap = 0;
    int rc = 0;
    if (kind == PyUnicode_1BYTE_KIND) {
        t = (const uint8_t *)data;
    } else {
        narrow = (uint8_t *)malloc((size_t)(n ? n : 1));
        if (!narrow) return -1;
        if (kind == PyUnicode_2BYTE_KIND)
            narrow_2((const Py_UCS2 *)data, n, narrow);
        else
            narrow_4((const Py_UCS4 *)data, n, narrow);
        t = narrow;
    }
    const uint8_t *C = date_scan_class;
    Py_ssize_t pos = 0, line_start = 0; /* line_start: of the line holding pos, when known */
    while (rc == 0) {
        while (pos < n && !C[t[pos]]) pos++;
        if (pos >= n) break;
        uint8_t c = C[t[pos]];
        if (c == 3) { /* a newline */
            line_start = ++pos;
            continue;
        }
        if (c == 1) {
            Py_ssize_t a = pos;
            while (pos < n && C[t[pos]] == 1) pos++;
            if (!date_anchor(t, a, pos, n)) continue;
        }
        const uint8_t *nl = (const uint8_t *)memchr(t + pos, '\n', (size_t)(n - pos));
        Py_ssize_t le = nl ? nl - t : n;
        rc = date_line(t, line_start, le, kind, data, found, other, &scratch, &cap);
        pos = le + 1;
        line_start = pos;
    }
    free(narrow);
    free(scratch);
    return rc;
}

static PyObject *py_dates_in_text(PyObject *mod, PyObject *arg) {
    (void)mod;
    if (!PyUnicode_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "dates_in_text needs a str");
        return NULL;
    }
    Pairs found = {NULL, 0, 0}, other = {NULL, 0, 0};
    PyObject *res = NULL;
    if (dates_of(arg, &found, &other) < 0) {
        PyErr_NoMemory();
    } else {
        /* (y# of a NULL pointer is None: pass "" for an empty list) */
        res = Py_BuildValue("(y#y#)", found.data ? (const char *)found.data : "",
                            found.n * (Py_ssize_t)sizeof(int64_t),
                            other.data ? (const char *)other.data : "",
                            other.n * (Py_ssize_t)sizeof(int64_t));
    }
    free(found.data);
    free(other.data);
    return res;
}

/* date_counts(text) -> (counted, windows): `dates_in_text`, with the matches spelled alike
 * counted once: `counted` holds an int64 triple (start, end, count) per distinct spelling, at
 * its first match. A long output prints the same few dates thousands of times, and
 * `_matching.listed_values` wants each spelling once with its count. */
static PyObject *py_date_counts(PyObject *mod, PyObject *arg) {
    (void)mod;
    if (!PyUnicode_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "date_counts needs a str");
        return NULL;
    }
    Pairs found = {NULL, 0, 0}, other = {NULL, 0, 0};
    PyObject *res = NULL;
    int64_t *out = NULL;
    Py_ssize_t *slots = NULL;
    if (dates_of(arg, &found, &other) < 0) goto nomem;
    {
        const int kind = PyUnicode_KIND(arg);
        const char *data = (const char *)PyUnicode_DATA(arg);
        Py_ssize_t m = found.n / 2, size = 16, nd = 0;
        while (size < 2 * m) size <<= 1;
        slots = (Py_ssize_t *)malloc((size_t)size * sizeof(Py_ssize_t)); /* index into out / 3 */
        out = (int64_t *)malloc((size_t)(m ? m : 1) * 3 * sizeof(int64_t));
        if (!slots || !out) goto nomem;
        for (Py_ssize_t k = 0; k < size; k++) slots[k] = -1;
        for (Py_ssize_t j = 0; j < m; j++) {
            int64_t a = found.data[2 * j], b = found.data[2 * j + 1];
            const char *p = data + a * kind;
            size_t len = (size_t)(b - a) * (size_t)kind;
            uint64_t h = 0xCBF29CE484222325ULL;
            for (size_t q = 0; q < len; q++) h = (h ^ (uint8_t)p[q]) * 0x100000001B3ULL;
            Py_ssize_t k = (Py_ssize_t)(h & (uint64_t)(size - 1));
            for (;;) {
                Py_ssize_t d = slots[k];
                if (d < 0) {
                    slots[k] = nd;
                    out[3 * nd] = a;
                    out[3 * nd + 1] = b;
                    out[3 * nd + 2] = 1;
                    nd++;
                    break;
                }
                int64_t a2 = out[3 * d], b2 = out[3 * d + 1];
                if (b2 - a2 == b - a && memcmp(data + a2 * kind, p, len) == 0) {
                    out[3 * d + 2]++;
                    break;
                }
                k = (k + 1) & (size - 1);
            }
        }
        res = Py_BuildValue("(y#y#)", (const char *)out, nd * 3 * (Py_ssize_t)sizeof(int64_t),
                            other.data ? (const char *)other.data : "",
                            other.n * (Py_ssize_t)sizeof(int64_t));
    }
    goto done;
nomem:
    PyErr_NoMemory();
done:
    free(slots);
    free(out);
    free(found.data);
    free(other.data);
    return res;
}

/* ------------------------------------------------------------------ label words
 *
 * label_words(text, words) -> int: bit k set when words[k] (lower-case ASCII letters and '.')
 * occurs in `text` with ASCII letters folded to lower case: in one pass, what
 * `words[k] in text.lower()` says for each word of an ASCII text (`phi` looks for the labels of
 * MRNs, dates of birth and SSNs this way). Other characters match no letter of a word. */
/* A character as the letter of a word: ASCII case folded; the Kelvin sign is the one character
 * outside ASCII that `str.lower` makes an ASCII letter ('k'); any other matches nothing. */
#define LABEL_FOLD(c)                                                                        \
    ((c) < 128 ? (((c) >= 'A' && (c) <= 'Z') ? (c) | 0x20 : (c)) : (c) == 0x212A ? 'k' : 0)

/* Occurrences of the words in one storage kind of str: with `hits` NULL, the bits of the words
 * found (stopping once all are); else every occurrence, as (start, word) pairs in `hits`. */
#define LABELS_KIND(T_, NAME)                                                                \
    static int NAME(const T_ *src, Py_ssize_t n, const char *const *w, const Py_ssize_t *wl,  \
                    const int8_t *last, const int8_t *next, unsigned long *found,            \
                    unsigned long all, Pairs *hits) {                                        \
        for (Py_ssize_t i = 0; i < n && (hits || *found != all); i++) {                      \
            Py_UCS4 c = src[i];                                                              \
            c = LABEL_FOLD(c);                                                               \
            if (!c || last[c] < 0) continue;                                                 \
            for (int k = last[c]; k >= 0; k = next[k]) {                                     \
                if ((!hits && (*found & (1UL << k))) || wl[k] > i + 1) continue;             \
                Py_ssize_t j = 0, at = i + 1 - wl[k];                                        \
                while (j < wl[k] - 1) {                                                      \
                    Py_UCS4 d = src[at + j];                                                 \
                    if (LABEL_FOLD(d) != (Py_UCS4)(uint8_t)w[k][j]) break;                   \
                    j++;                                                                     \
                }                                                                            \
                if (j == wl[k] - 1) {                                                        \
                    *found |= 1UL << k;                                                      \
                    if (hits && pairs_push(hits, at, k) < 0) return -1;                      \
                }                                                                            \
            }                                                                                \
        }                                                                                    \
        return 0;                                                                            \
    }
LABELS_KIND(Py_UCS1, labels_1)
LABELS_KIND(Py_UCS2, labels_2)
LABELS_KIND(Py_UCS4, labels_4)
#undef LABELS_KIND

/* The words of a label_words / label_windows call, checked. */
typedef struct {
    const char *w[32];
    Py_ssize_t wl[32];
    Py_ssize_t nw;
    /* The words ending in each character, as a list: last[c] the first (-1: none), next[k]
     * the one after word k. Only where a word can end is a comparison made. */
    int8_t last[256];
    int8_t next[32];
} LabelWords;

static int label_words_of(PyObject *words, LabelWords *lw, const char *fn) {
    lw->nw = PyTuple_GET_SIZE(words);
    if (lw->nw > 32) {
        PyErr_Format(PyExc_ValueError, "%s: at most 32 words", fn);
        return -1;
    }
    memset(lw->last, -1, sizeof(lw->last));
    for (Py_ssize_t k = lw->nw - 1; k >= 0; k--) {
        PyObject *o = PyTuple_GET_ITEM(words, k);
        if (!PyUnicode_Check(o) || !PyUnicode_IS_ASCII(o) || PyUnicode_GET_LENGTH(o) < 1) {
            PyErr_Format(PyExc_ValueError, "%s: words must be non-empty ASCII str", fn);
            return -1;
        }
        lw->w[k] = (const char *)PyUnicode_1BYTE_DATA(o);
        lw->wl[k] = PyUnicode_GET_LENGTH(o);
        uint8_t end = (uint8_t)lw->w[k][lw->wl[k] - 1];
        lw->next[k] = lw->last[end];
        lw->last[end] = (int8_t)k;
    }
    return 0;
}

static int labels_in(PyObject *text, const LabelWords *lw, unsigned long *found, Pairs *hits) {
    const int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    const Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    unsigned long all = lw->nw == 32 ? 0xFFFFFFFFUL : ((1UL << lw->nw) - 1);
    if (kind == PyUnicode_1BYTE_KIND)
        return labels_1((const Py_UCS1 *)data, n, lw->w, lw->wl, lw->last, lw->next, found, all,
                        hits);
    if (kind == PyUnicode_2BYTE_KIND)
        return labels_2((const Py_UCS2 *)data, n, lw->w, lw->wl, lw->last, lw->next, found, all,
                        hits);
    return labels_4((const Py_UCS4 *)data, n, lw->w, lw->wl, lw->last, lw->next, found, all, hits);
}

static PyObject *py_label_words(PyObject *mod, PyObject *args) {
    (void)mod;
    PyObject *text, *words;
    if (!PyArg_ParseTuple(args, "UO!", &text, &PyTuple_Type, &words)) return NULL;
    LabelWords lw;
    if (label_words_of(words, &lw, "label_words") < 0) return NULL;
    unsigned long found = 0;
    labels_in(text, &lw, &found, NULL);
    return PyLong_FromUnsignedLong(found);
}

static int cmp_pair(const void *x, const void *y) {
    const int64_t *a = (const int64_t *)x, *b = (const int64_t *)y;
    if (a[0] != b[0]) return a[0] < b[0] ? -1 : 1;
    if (a[1] != b[1]) return a[1] < b[1] ? -1 : 1;
    return 0;
}

/* ------------------------------------------------------------------ label windows
 *
 * label_windows(text, words, before, after) -> bytes of int64 pairs: what
 * `phi._word_windows(text.lower(), words, before, after)` returns, without lower-casing the
 * text, for a text whose lower-casing keeps its length (one without U+0130, the only character
 * `str.lower` makes two): then each character lower-cases to one, in place, and to a letter of
 * a word only as LABEL_FOLD says. Windows of `before`/`after` characters around every
 * occurrence of every word, sorted and merged where they overlap or touch. */
static PyObject *py_label_windows(PyObject *mod, PyObject *args) {
    (void)mod;
    PyObject *text, *words;
    Py_ssize_t before, after;
    if (!PyArg_ParseTuple(args, "UO!nn", &text, &PyTuple_Type, &words, &before, &after))
        return NULL;
    LabelWords lw;
    if (label_words_of(words, &lw, "label_windows") < 0) return NULL;
    const Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    Pairs hits = {NULL, 0, 0};
    unsigned long found = 0;
    if (labels_in(text, &lw, &found, &hits) < 0) {
        free(hits.data);
        return PyErr_NoMemory();
    }
    Py_ssize_t m = hits.n / 2, out = 0;
    for (Py_ssize_t j = 0; j < m; j++) {
        int64_t at = hits.data[2 * j], k = hits.data[2 * j + 1];
        int64_t lo = at - before, hi = at + lw.wl[k] + after;
        hits.data[2 * j] = lo < 0 ? 0 : lo;
        hits.data[2 * j + 1] = hi > n ? n : hi;
    }
    if (m > 1) qsort(hits.data, (size_t)m, 2 * sizeof(int64_t), cmp_pair);
    for (Py_ssize_t j = 0; j < m; j++) {
        int64_t lo = hits.data[2 * j], hi = hits.data[2 * j + 1];
        if (out && lo <= hits.data[2 * out - 1]) {
            if (hi > hits.data[2 * out - 1]) hits.data[2 * out - 1] = hi;
        } else {
            hits.data[2 * out] = lo;
            hits.data[2 * out + 1] = hi;
            out++;
        }
    }
    PyObject *res = PyBytes_FromStringAndSize(hits.data ? (const char *)hits.data : "",
                                              out * 2 * (Py_ssize_t)sizeof(int64_t));
    free(hits.data);
    return res;
}

/* ------------------------------------------------------------------ character offsets
 *
 * char_offsets(raw, offsets) -> bytes: the character offsets of ascending byte `offsets`
 * (int64) of the UTF-8 `raw`: each minus the continuation bytes (0b10xxxxxx) before it,
 * counted eight bytes at a time in one pass (what `identifiers._char_offsets` does with numpy,
 * a mask and a search over the whole text). */
static PyObject *py_char_offsets(PyObject *mod, PyObject *args) {
    (void)mod;
    Py_buffer rb, ob;
    if (!PyArg_ParseTuple(args, "y*y*", &rb, &ob)) return NULL;
    PyObject *res = NULL;
    const uint8_t *raw = (const uint8_t *)rb.buf;
    const Py_ssize_t n = rb.len, m = ob.len / (Py_ssize_t)sizeof(int64_t);
    const int64_t *q = (const int64_t *)ob.buf;
    res = PyBytes_FromStringAndSize(NULL, m * (Py_ssize_t)sizeof(int64_t));
    if (!res) goto done;
    {
        int64_t *out = (int64_t *)PyBytes_AS_STRING(res);
        Py_ssize_t pos = 0, cont = 0;
        for (Py_ssize_t k = 0; k < m; k++) {
            if (q[k] < pos || q[k] > n) {
                Py_CLEAR(res);
                PyErr_SetString(PyExc_ValueError,
                                "char_offsets: offsets must ascend within the buffer");
                goto done;
            }
            for (; pos + 8 <= q[k]; pos += 8) {
                uint64_t w = load_le(raw + pos, 8);
                cont += __builtin_popcountll(w & ~(w << 1) & 0x8080808080808080ULL);
            }
            for (; pos < q[k]; pos++) cont += (raw[pos] & 0xC0) == 0x80;
            out[k] = q[k] - cont;
        }
    }
done:
    PyBuffer_Release(&rb);
    PyBuffer_Release(&ob);
    return res;
}

/* ASCII lower-cased (the upper half unused). */
static uint8_t ascii_lower[128];

/* lower_utf8 over one storage kind of str (T_: Py_UCS1, Py_UCS2 or Py_UCS4): a loop per kind,
 * as the per-character kind switch of PyUnicode_READ cost more than the work itself. */
#define LOWER_UTF8_KIND(T_, NAME)                                                            \
    static PyObject *NAME(const T_ *src, Py_ssize_t n) {                                     \
        Py_ssize_t size = 0;                                                                 \
        for (Py_ssize_t i = 0; i < n; i++) {                                                 \
            /* Eight ASCII characters at once (the usual case), then one at a time. */       \
            while (i + 8 <= n && (src[i] | src[i + 1] | src[i + 2] | src[i + 3] | src[i + 4] | \
                                  src[i + 5] | src[i + 6] | src[i + 7]) < 0x80) {            \
                size += 8;                                                                   \
                i += 8;                                                                      \
            }                                                                                \
            if (i >= n) break;                                                               \
            Py_UCS4 c = src[i];                                                              \
            if (c < 0x80) {                                                                  \
                size += 1;                                                                   \
                continue;                                                                    \
            }                                                                                \
            if ((c >= 0xD800 && c < 0xE000) || Py_UNICODE_TOLOWER(c) != c) Py_RETURN_NONE;    \
            size += c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;                                     \
        }                                                                                    \
        PyObject *res = PyBytes_FromStringAndSize(NULL, size);                               \
        if (!res) return NULL;                                                               \
        uint8_t *o = (uint8_t *)PyBytes_AS_STRING(res);                                      \
        for (Py_ssize_t i = 0; i < n; i++) {                                                 \
            while (i + 8 <= n && (src[i] | src[i + 1] | src[i + 2] | src[i + 3] | src[i + 4] | \
                                  src[i + 5] | src[i + 6] | src[i + 7]) < 0x80) {            \
                for (int j = 0; j < 8; j++) o[j] = ascii_lower[src[i + j]];                  \
                o += 8;                                                                      \
                i += 8;                                                                      \
            }                                                                                \
            if (i >= n) break;                                                               \
            Py_UCS4 c = src[i];                                                              \
            if (c < 0x80) {                                                                  \
                *o++ = (uint8_t)((c >= 'A' && c <= 'Z') ? c | 0x20 : c);                     \
            } else if (c < 0x800) {                                                          \
                *o++ = (uint8_t)(0xC0 | (c >> 6));                                           \
                *o++ = (uint8_t)(0x80 | (c & 0x3F));                                         \
            } else if (c < 0x10000) {                                                        \
                *o++ = (uint8_t)(0xE0 | (c >> 12));                                          \
                *o++ = (uint8_t)(0x80 | ((c >> 6) & 0x3F));                                  \
                *o++ = (uint8_t)(0x80 | (c & 0x3F));                                         \
            } else {                                                                         \
                *o++ = (uint8_t)(0xF0 | (c >> 18));                                          \
                *o++ = (uint8_t)(0x80 | ((c >> 12) & 0x3F));                                 \
                *o++ = (uint8_t)(0x80 | ((c >> 6) & 0x3F));                                  \
                *o++ = (uint8_t)(0x80 | (c & 0x3F));                                         \
            }                                                                                \
        }                                                                                    \
        return res;                                                                          \
    }
LOWER_UTF8_KIND(Py_UCS1, lower_utf8_1)
LOWER_UTF8_KIND(Py_UCS2, lower_utf8_2)
LOWER_UTF8_KIND(Py_UCS4, lower_utf8_4)
#undef LOWER_UTF8_KIND

/* ------------------------------------------------------------------ lower-cased UTF-8
 *
 * lower_utf8(text) -> bytes | None: `text.lower().encode()` in one pass when that is the text
 * with its ASCII letters lower-cased, i.e. when every other character lower-cases to itself
 * (no capital letter outside ASCII, no surrogate); else None, and `_tokens.lower_bytes` does it
 * in Python. Only the simple mapping is read: the characters whose full lower case differs
 * from it (U+0130, and U+03A3 by context) are capitals whose simple mapping is not themselves. */
/* lower_ascii(text) -> bytes: `text.encode("ascii").translate(lower)` of an ASCII str, eight
 * bytes at a time (a capital is a byte in [A, Z]; its top bit marked as in `ascii_run_end`,
 * shifted down to 0x20, is the bit that lower-cases it). */
static PyObject *py_lower_ascii(PyObject *mod, PyObject *arg) {
    (void)mod;
    if (!PyUnicode_Check(arg) || PyUnicode_READY(arg) < 0 || !PyUnicode_IS_ASCII(arg)) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "lower_ascii needs an ASCII str");
        return NULL;
    }
    const uint8_t *src = (const uint8_t *)PyUnicode_DATA(arg);
    const Py_ssize_t n = PyUnicode_GET_LENGTH(arg);
    PyObject *res = PyBytes_FromStringAndSize(NULL, n);
    if (!res) return NULL;
    uint8_t *o = (uint8_t *)PyBytes_AS_STRING(res);
    Py_ssize_t i = 0;
#if defined(__SSE2__)
    /* Sixteen bytes a step with SSE2: 0x20 added to each capital (the bytes are ASCII: a
     * signed compare reads them). */
    if (use_simd) {
        const __m128i before_a = _mm_set1_epi8('A' - 1), after_z = _mm_set1_epi8('Z' + 1);
        const __m128i bit = _mm_set1_epi8(0x20);
        for (; i + 16 <= n; i += 16) {
            const __m128i x = _mm_loadu_si128((const __m128i *)(src + i));
            const __m128i up = _mm_and_si128(_mm_cmpgt_epi8(x, before_a), _mm_cmplt_epi8(x, after_z));
            _mm_storeu_si128((__m128i *)(o + i), _mm_or_si128(x, _mm_and_si128(up, bit)));
        }
    }
#endif
#if !(defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__)
    const uint64_t ones = 0x0101010101010101ULL, tops = 0x8080808080808080ULL;
    const uint64_t from = ones * (uint64_t)(0x80 - 'A'), past = ones * (uint64_t)(0x7f - 'Z');
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, src + i, 8);
        w |= (((w + from) & ~(w + past)) & tops) >> 2;
        memcpy(o + i, &w, 8);
    }
#endif
    for (; i < n; i++) o[i] = ascii_lower[src[i]];
    return res;
}

static PyObject *py_lower_utf8(PyObject *mod, PyObject *arg) {
    (void)mod;
    if (!PyUnicode_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "lower_utf8 needs a str");
        return NULL;
    }
    const int kind = PyUnicode_KIND(arg);
    const void *data = PyUnicode_DATA(arg);
    const Py_ssize_t n = PyUnicode_GET_LENGTH(arg);
    if (kind == PyUnicode_1BYTE_KIND) return lower_utf8_1((const Py_UCS1 *)data, n);
    if (kind == PyUnicode_2BYTE_KIND) return lower_utf8_2((const Py_UCS2 *)data, n);
    return lower_utf8_4((const Py_UCS4 *)data, n);
}

/* plain_display(text) -> bool: whether `text` is ASCII that displays as written, with no control
 * character other than tab and newline, no "<" and no "&" (`bedside.policy._display.needs_view`:
 * such text needs no display view). Eight bytes at a time: a word is looked at byte by byte only
 * when it may hold one of those (a newline or tab also sends it there, once a line or so). */
static int display_byte(uint8_t c) {
    return (c < 0x20 && c != '\t' && c != '\n') || c == 0x7f || c == '<' || c == '&';
}

static PyObject *py_plain_display(PyObject *mod, PyObject *arg) {
    (void)mod;
    if (!PyUnicode_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "plain_display needs a str");
        return NULL;
    }
    if (PyUnicode_READY(arg) < 0) return NULL;
    if (!PyUnicode_IS_ASCII(arg)) Py_RETURN_FALSE;
    const uint8_t *src = (const uint8_t *)PyUnicode_DATA(arg);
    const Py_ssize_t n = PyUnicode_GET_LENGTH(arg);
    Py_ssize_t i = 0;
#if defined(__SSE2__)
    /* Sixty-four bytes a step with SSE2 (the bytes are ASCII: a signed compare reads them). A
     * step with any of those bytes is left to the words below, which find it again. */
    if (use_simd) {
        const __m128i ctl = _mm_set1_epi8(0x20), tab = _mm_set1_epi8('\t'), lf = _mm_set1_epi8('\n');
        const __m128i del = _mm_set1_epi8(0x7f), lt = _mm_set1_epi8('<'), amp = _mm_set1_epi8('&');
        for (; i + 64 <= n; i += 64) {
            __m128i any = _mm_setzero_si128();
            for (int k = 0; k < 4; k++) {
                const __m128i x = _mm_loadu_si128((const __m128i *)(src + i + 16 * k));
                const __m128i control = _mm_andnot_si128(
                    _mm_or_si128(_mm_cmpeq_epi8(x, tab), _mm_cmpeq_epi8(x, lf)),
                    _mm_cmplt_epi8(x, ctl));
                any = _mm_or_si128(any, _mm_or_si128(control, _mm_or_si128(
                    _mm_cmpeq_epi8(x, del), _mm_or_si128(_mm_cmpeq_epi8(x, lt), _mm_cmpeq_epi8(x, amp)))));
            }
            if (_mm_movemask_epi8(any)) break;
        }
    }
#endif
    const uint64_t ones = 0x0101010101010101ULL, tops = 0x8080808080808080ULL;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, src + i, 8);
        const uint64_t lt = ones * (uint64_t)'<', amp = ones * (uint64_t)'&', del = ones * 0x7fULL;
        const uint64_t a = w ^ lt, b = w ^ amp, d = w ^ del;
        /* a byte < 0x20, or a byte equal to "<", "&" or DEL (zero after the xor) */
        const uint64_t maybe = ((w - ones * 0x20ULL) & ~w) | ((a - ones) & ~a) |
                               ((b - ones) & ~b) | ((d - ones) & ~d);
        if (maybe & tops) {
            for (int k = 0; k < 8; k++)
                if (display_byte(src[i + k])) Py_RETURN_FALSE;
        }
    }
    for (; i < n; i++)
        if (display_byte(src[i])) Py_RETURN_FALSE;
    Py_RETURN_TRUE;
}

/* ------------------------------------------------------------------ markup joins
 *
 * markup_joins(buf) -> bool, over the UTF-8 bytes of a text: whether a browser showing it as
 * HTML could join text that the text as written keeps apart (`bedside.policy._display`): an
 * inline or unknown tag (browsers show unknown elements inline), a comment, doctype or
 * processing instruction, a character reference ("&" then a letter or "#"), or a run of white
 * space inside a text node that a browser collapses to one space but the identifier index
 * reads as a break (holding a line break, tab or form feed, or 4+ characters long), or a tag a
 * browser ignores (an end tag of an element not opened, a table cell outside a table). Tags of
 * block elements (tables, div, p, br, ...) break the line in the view too, and the content of
 * style, script, template and title elements is not shown: neither joins anything. One pass,
 * so that the HTML of a large table that holds only block tags costs no view. */
static const char *const BLOCK_TAGS[] = {
    /* the tags of a table first: they are nearly all a large output holds */
    "td", "tr", "th", "tbody", "thead", "table", "div", "p", "br", "address", "article", "aside", "audio", "blockquote", "body", "br", "button", "canvas",
    "caption", "center", "col", "colgroup", "dd", "details", "dialog", "dir", "div", "dl", "dt",
    "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6",
    "head", "header", "hr", "html", "iframe", "img", "input", "legend", "li", "link", "main",
    "menu", "meta", "nav", "noscript", "ol", "optgroup", "option", "p", "pre", "section",
    "select", "summary", "svg", "table", "tbody", "td", "textarea", "tfoot", "th", "thead", "tr",
    "ul", "video", "style", "script", "template", "title", NULL};

/* The index of `name` in BLOCK_TAGS, or -1. */
static int markup_block(const char *name) {
    for (int k = 0; BLOCK_TAGS[k]; k++)
        if (strcmp(name, BLOCK_TAGS[k]) == 0) return k;
    return -1;
}

/* Parts of a table: a browser ignores their tags outside a table (`Tia<td>rna` shows Tiarna). */
static int markup_table_part(const char *name) {
    static const char *const parts[] = {"td", "tr", "th", "tbody", "thead", "tfoot", "caption",
                                        "col", "colgroup", NULL};
    for (int k = 0; parts[k]; k++)
        if (strcmp(name, parts[k]) == 0) return 1;
    return 0;
}

static int markup_space(uint8_t c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f';
}

static int markup_alnum(uint8_t c) {
    return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') || c >= 0x80;
}

/* Whether the character reference at s[i] ("&") may join text: any numeric one, and any named
 * one but the references of punctuation and white space (&amp; &lt; &gt; &quot; &apos; &nbsp;)
 * standing between non-letters (`>&nbsp;<` in a pandas Styler table); an "&" without a name
 * is shown as it is. */
static int markup_reference_joins(const uint8_t *s, Py_ssize_t n, Py_ssize_t i) {
    static const char *const plain[] = {"amp", "lt", "gt", "quot", "apos", "nbsp", NULL};
    if (i + 1 >= n) return 0;
    if (s[i + 1] == '#') return 1;
    char name[8];
    int len = 0;
    Py_ssize_t j = i + 1;
    while (j < n && len < 7 && (s[j] | 0x20) >= 'a' && (s[j] | 0x20) <= 'z') name[len++] = (char)s[j++];
    name[len] = 0;
    if (len == 0) return 0;
    if (j >= n || s[j] != ';') return 1;
    for (int k = 0; plain[k]; k++)
        if (strcmp(name, plain[k]) == 0)
            return (i > 0 && markup_alnum(s[i - 1])) || (j + 1 < n && markup_alnum(s[j + 1]));
    return 1;
}

static const char *const INLINE_TAGS[] = {
    "a", "abbr", "acronym", "b", "bdi", "bdo", "big", "cite", "code", "data", "del", "dfn", "em",
    "font", "i", "ins", "kbd", "mark", "nobr", "q", "rp", "rt", "ruby", "s", "samp", "small",
    "span", "strike", "strong", "sub", "sup", "time", "tt", "u", "var", "wbr", NULL};

static int markup_inline(const char *name) {
    for (int k = 0; INLINE_TAGS[k]; k++)
        if (strcmp(name, INLINE_TAGS[k]) == 0) return 1;
    return 0;
}

/* Whether "</name" occurs anywhere in s (ASCII case folded), remembered per name: an unknown
 * element is read as a tag only when it is closed somewhere, since Python's reprs
 * (`<Figure size 640x480 with 1 Axes>`, `<function f at 0x...>`) look like start tags. */
typedef struct {
    char name[16];
    int found;
} EndTagMemo;

static int markup_end_tag_in(const uint8_t *s, Py_ssize_t n, const char *name, int len,
                             EndTagMemo *memo, int *used) {
    for (int k = 0; k < *used; k++)
        if (strcmp(memo[k].name, name) == 0) return memo[k].found;
    int found = 0;
    for (Py_ssize_t i = 0; i + 2 + len <= n && !found; i++) {
        const uint8_t *hit = memchr(s + i, '<', (size_t)(n - i));
        if (!hit) break;
        i = hit - s;
        if (i + 2 + len <= n && s[i + 1] == '/' &&
            PyOS_strnicmp((const char *)s + i + 2, name, (size_t)len) == 0) {
            const uint8_t after = i + 2 + len < n ? s[i + 2 + len] : '>';
            found = !((after | 0x20) >= 'a' && (after | 0x20) <= 'z') && !(after >= '0' && after <= '9') && after != '-';
        }
    }
    if (*used < 16) {
        memcpy(memo[*used].name, name, (size_t)len + 1);
        memo[*used].found = found;
        (*used)++;
    }
    return found;
}

static PyObject *py_markup_joins(PyObject *mod, PyObject *arg) {
    (void)mod;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    const uint8_t *s = (const uint8_t *)view.buf;
    const Py_ssize_t n = view.len;
    int joins = 0, html = 0, spaces = 0;
    uint8_t opened[sizeof(BLOCK_TAGS) / sizeof(BLOCK_TAGS[0])] = {0};
    const int table = markup_block("table");
    EndTagMemo memo[16];
    int memo_used = 0;
    Py_ssize_t i = 0;
    while (i < n && !joins) {
        const uint8_t c = s[i];
        if (c == '&') {
            if (i + 1 < n && (s[i + 1] == '#' || ((s[i + 1] | 0x20) >= 'a' && (s[i + 1] | 0x20) <= 'z')))
                html = 1;
            joins = markup_reference_joins(s, n, i);
            i++;
        } else if (c == '<') {
            Py_ssize_t j = i + 1;
            if (j < n && (s[j] == '!' || s[j] == '?')) {
                joins = 1;
                break;
            }
            int closing = j < n && s[j] == '/';
            if (closing) j++;
            char name[16];
            int len = 0, capital = 0;
            while (j < n && len < 15) {
                const uint8_t d = s[j];
                const int letter = (d | 0x20) >= 'a' && (d | 0x20) <= 'z';
                if (!letter && !(d >= '0' && d <= '9') && d != '-') break;
                capital |= d >= 'A' && d <= 'Z';
                name[len++] = (char)(letter ? d | 0x20 : d);
                j++;
            }
            name[len] = 0;
            if (len == 0 || (s[i + 1 + closing] >= '0' && s[i + 1 + closing] <= '9')) {
                i++;  /* "<" not opening a tag ("a < b", "<3"): shown as it is */
                continue;
            }
            const int block = len == 15 ? -1 : markup_block(name);
            if (block < 0) {
                /* An inline element joins; so does an unknown one, when it is closed somewhere
                 * (else it is read as text: a repr). */
                if (closing || markup_inline(name) ||
                    markup_end_tag_in(s, n, name, len, memo, &memo_used)) {
                    joins = 1;
                    break;
                }
                i++;
                continue;
            }
            /* A known tag makes the text read as HTML (white space collapses) when written in
             * lower case or closed somewhere; `<Figure size 640x480 with 1 Axes>`, a repr, does
             * not. */
            html |= !capital || closing || markup_end_tag_in(s, n, name, len, memo, &memo_used);
            /* A tag a browser ignores joins: an end tag of an element never opened (but p and
             * br, which make one), or a part of a table before any table. */
            if ((closing && !opened[block] && strcmp(name, "p") != 0 && strcmp(name, "br") != 0) ||
                (!opened[table] && markup_table_part(name))) {
                joins = 1;
                break;
            }
            if (!closing) opened[block] = 1;
            while (j < n && s[j] != '>') j++;
            i = j + 1;
            if (!closing && (strcmp(name, "style") == 0 || strcmp(name, "script") == 0 ||
                             strcmp(name, "template") == 0 || strcmp(name, "title") == 0)) {
                /* skip to the closing tag: the content is not shown */
                for (; i + 2 + len < n; i++)
                    if (s[i] == '<' && s[i + 1] == '/' &&
                        PyOS_strnicmp((const char *)s + i + 2, name, (size_t)len) == 0)
                        break;
            }
        } else if (markup_space(c)) {
            Py_ssize_t j = i;
            int breaks = 0;
            while (j < n && markup_space(s[j])) {
                breaks |= s[j] != ' ';
                j++;
            }
            if (i > 0 && j < n && s[i - 1] != '>' && s[j] != '<' && (breaks || j - i >= 4))
                spaces = 1;
            i = j;
        } else {
            i++;
        }
    }
    PyBuffer_Release(&view);
    /* White space collapses only where the text is read as HTML (a known tag or a character
     * reference in it): a plain-text log holding a repr keeps its lines. */
    return PyBool_FromLong(joins || (html && spaces));
}

/* ------------------------------------------------------------------ separated values
 *
 * separated_hints(text, min_digits, max_digits, max_word) -> bytes of int64 pairs (form, position): where in
 * `text` the forms of `bedside.policy._separated` can start, found in one pass over its
 * characters (a text past Latin-1 is first read into a byte per character), so that a megabyte of prose or of a numeric table costs about a millisecond and
 * the regular expressions of `_separated` run only at these positions. Forms:
 * 1, four or more single letters or digits with one to nine other characters (no line feed,
 *    letter or digit) between each and the next: the first's position, and form 5 after the
 *    chain's last; a chain of more than `max_digits` digits alone with one separator throughout
 *    is no hint (form 0);
 * 2, a word of letters followed (directly or after one of ` -._/` or NBSP) by digits, one of
 *    those and a digit, not two groups joined by a point after the word or a blank
 *    (`loss 0.25`, `I63.9`), a word of at most `max_word` letters: the word's position, and
 *    form 6 at the word's end;
 * 3, three or more digit groups joined by one repeated `.`, `_`, `/` or NBSP, with `min_digits`
 *    digits in all, not after a `.`: the first digit's position;
 * 4, a line of one to three words of letters (a hyphen or apostrophe inside; a space or tab
 *    between, blanks around) followed by a line starting with a letter, maybe after blanks:
 *    the line's position.
 * A hint is a superset of the form's matches (for letters of Latin-1); the Python side confirms
 * each. */
#define SEP_DIGIT(c) ((c) >= '0' && (c) <= '9')
#define SEP_LETTER(c) (((c) | 0x20) >= 'a' && ((c) | 0x20) <= 'z')
#define SEP_BLANK(c) ((c) == ' ' || (c) == '\t')

/* Hints are (form, position) pairs, kept in a `Pairs` (`pairs_push`). */

static uint8_t sh_class[256];
enum { SH_ALNUM = 1, SH_DIGIT = 2, SH_LETTER = 4, SH_LF = 8, SH_DOTSEP = 16, SH_GROUP = 32 };
#define SH_IS_LETTER(c) (sh_class[(c)] & SH_LETTER)

/* Whether the line starting at `i` is one to three words of letters followed by a line whose
 * first non-blank character is a letter. */
static int short_line_pair(const uint8_t *s, Py_ssize_t n, Py_ssize_t i) {
    while (i < n && SEP_BLANK(s[i])) i++;
    int words = 0;
    while (i < n && SH_IS_LETTER(s[i])) {
        if (++words > 3) return 0;
        for (;;) { /* a word: letters, maybe joined by a hyphen or an apostrophe */
            while (i < n && SH_IS_LETTER(s[i])) i++;
            if (i + 1 < n && (s[i] == '-' || s[i] == '\'') && SH_IS_LETTER(s[i + 1])) i++;
            else break;
        }
        if (i < n && SEP_BLANK(s[i]) && i + 1 < n && SH_IS_LETTER(s[i + 1])) i++;
    }
    if (!words) return 0;
    while (i < n && SEP_BLANK(s[i])) i++;
    if (i < n && s[i] == '\r') i++;
    if (i >= n || s[i] != '\n') return 0;
    i++;
    while (i < n && SEP_BLANK(s[i])) i++;
    return i < n && SH_IS_LETTER(s[i]);
}

/* Byte classes of `separated_hints`: a letter or digit, a digit, a letter, a line feed, one of
 * `._/` (joins digit groups that are not a decimal's), one of ` -._/` (joins groups). */
static void sh_init(void) {
    for (int c = 0; c < 256; c++) {
        uint8_t t = 0;
        if (SEP_DIGIT(c)) t |= SH_ALNUM | SH_DIGIT;
        /* Latin-1 letters too (a str of one byte per character is Latin-1). */
        if ((c < 128 && SEP_LETTER(c)) || (c >= 0xc0 && c != 0xd7 && c != 0xf7))
            t |= SH_ALNUM | SH_LETTER;
        if (c == '\n') t |= SH_LF;
        if (c == '.' || c == '_' || c == '/' || c == 0xa0) t |= SH_DOTSEP | SH_GROUP;
        if (c == ' ' || c == '-') t |= SH_GROUP;
        sh_class[c] = t;
    }
}

/* The end of a chain of singles whose hint is b->data[at]: form 5 at its last single + 1. A chain
 * of more than `max_digits` digits with one separator throughout (a printed array,
 * `[0 1 1 0 ...]`, joins into a number no value has) is no hint: it becomes form 0. */
static int sh_chain_end(Pairs *b, Py_ssize_t at, Py_ssize_t singles, int letters, int mixed,
                        Py_ssize_t max_digits, Py_ssize_t last) {
    if (!letters && !mixed && singles > max_digits) {
        b->data[at] = 0;
        return 0;
    }
    return pairs_push(b, 5, last + 1);
}

/* `h` before the byte at k of a block whose letter-or-digit bits are `a` (bit k + 3: byte k;
 * bits 0-2: the three bytes before the block): bit 2, 1, 0 the bytes k - 3, k - 2, k - 1. */
#define SH_HPRE(a, k) \
    ((unsigned)((((a) >> (k)) & 1) << 2 | (((a) >> ((k) + 1)) & 1) << 1 | (((a) >> ((k) + 2)) & 1)))

static PyObject *py_separated_hints(PyObject *mod, PyObject *args) {
    (void)mod;
    PyObject *text;
    Py_ssize_t min_digits, max_digits, max_word;
    if (!PyArg_ParseTuple(args, "Onnn", &text, &min_digits, &max_digits, &max_word)) return NULL;
    if (!PyUnicode_Check(text) || PyUnicode_READY(text) < 0) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "separated_hints needs a str");
        return NULL;
    }
    if (!sh_class['a']) sh_init();
    const Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    uint8_t *proxy = NULL; /* a text with characters past Latin-1, a byte per character */
    const uint8_t *s = (const uint8_t *)PyUnicode_DATA(text);
    const int kind = PyUnicode_KIND(text);
    if (kind != PyUnicode_1BYTE_KIND) {
        /* Past Latin-1, a letter reads as `a`, a digit as `0`, anything else as `?` (no
         * separator of these forms): what the regular expressions of `_separated` read as a
         * letter, digit or other character. */
        proxy = (uint8_t *)malloc(n ? (size_t)n : 1);
        if (!proxy) return PyErr_NoMemory();
        const void *data = PyUnicode_DATA(text);
        for (Py_ssize_t i = 0; i < n; i++) {
            const Py_UCS4 c = PyUnicode_READ(kind, data, i);
            proxy[i] = c < 256 ? (uint8_t)c
                       : Py_UNICODE_ISALPHA(c) ? 'a'
                       : Py_UNICODE_ISDIGIT(c) ? '0'
                                               : '?';
        }
        s = proxy;
    }
    Pairs b = {NULL, 0, 0};
    Py_ssize_t last_single = -1, last_lf = -1; /* the last single character, line feed */
    Py_ssize_t chain_start = -1, chain_singles = 0; /* the open chain's first single, length */
    Py_ssize_t chain_at = -1; /* its hint (index in b) once it has four singles */
    int chain_letters = 0, chain_mixed = 0, chain_sep = -1; /* its letters, separators */
    if (n && short_line_pair(s, n, 0) && pairs_push(&b, 4, 0) < 0) goto fail;
    /* The last three bytes, a bit each (set: a letter or digit; before and after the text:
     * not). 010: a single character, the spaced form's only per-byte test. */
    unsigned h = 0;
#if defined(__SSE2__)
    /* The block read with SSE2: its first byte, end, bits (see below), events not yet run. */
    Py_ssize_t scalar_until = 0, block = 0, block_end = 0, retry64 = 0, backoff64 = 64;
    uint32_t mm = 0, pending = 0;
#endif
    for (Py_ssize_t i = 0; i <= n; i++) {
#if defined(__SSE2__)
        /* Sixteen bytes at a time: the positions where the loop below has something to do
         * (a single character ends, a line feed, the first digit of a run, one of `._/` after
         * a digit) are found with SSE2, and the loop runs at those only, `h` set for each from
         * the block's bits. A block with a byte outside ASCII is read one by one. */
        if (pending) {
            const int k = __builtin_ctz(pending);
            pending &= pending - 1;
            i = block + k;
            h = SH_HPRE(mm, k);
            goto step;
        }
        if (block_end) {
            i = block_end;
            h = SH_HPRE(mm, 16);
            block_end = 0;
        }
        while (i >= scalar_until && i + 16 <= n) {
            if (use_simd && i >= retry64 && i + 64 <= n) {
                /* Sixty-four bytes at once, the same tests as below over four registers: when
                 * none of them has an event, the loop below would pass all four blocks. Where
                 * one has, the next try is 64 bytes on, then 128, ... up to 1024 while they
                 * fail (tables and logs stop every few bytes: the tries would cost them a
                 * tenth of their time). */
                retry64 = i + backoff64;
                if (backoff64 < 1024) backoff64 *= 2;
                const __m128i flip = _mm_set1_epi8((char)0x80);
                uint64_t al = 0, dg = 0, lfs = 0, dots = 0;
                int high = 0;
                for (int k = 0; k < 4; k++) {
                    const __m128i x = _mm_loadu_si128((const __m128i *)(s + i + 16 * k));
                    high |= _mm_movemask_epi8(x);
                    const __m128i digit = _mm_cmplt_epi8(
                        _mm_xor_si128(_mm_sub_epi8(x, _mm_set1_epi8('0')), flip),
                        _mm_set1_epi8((char)(0x80 + 10)));
                    const __m128i letter = _mm_cmplt_epi8(
                        _mm_xor_si128(_mm_sub_epi8(_mm_or_si128(x, _mm_set1_epi8(0x20)),
                                                   _mm_set1_epi8('a')), flip),
                        _mm_set1_epi8((char)(0x80 + 26)));
                    const __m128i dotsep = _mm_or_si128(
                        _mm_or_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8('.')),
                                     _mm_cmpeq_epi8(x, _mm_set1_epi8('_'))),
                        _mm_cmpeq_epi8(x, _mm_set1_epi8('/')));
                    const int shift = 16 * k;
                    dg |= (uint64_t)(uint16_t)_mm_movemask_epi8(digit) << shift;
                    al |= (uint64_t)(uint16_t)_mm_movemask_epi8(_mm_or_si128(digit, letter)) << shift;
                    dots |= (uint64_t)(uint16_t)_mm_movemask_epi8(dotsep) << shift;
                    lfs |= (uint64_t)(uint16_t)_mm_movemask_epi8(
                               _mm_cmpeq_epi8(x, _mm_set1_epi8('\n'))) << shift;
                }
                if (!high) {
                    /* Bit k: byte i + k - 1 (- 2) is a letter or digit; a digit. */
                    const uint64_t al1 = (al << 1) | (h & 1);
                    const uint64_t al2 = (al << 2) | ((uint64_t)(h & 1) << 1) | ((h >> 1) & 1);
                    const uint64_t dg1 = (dg << 1) | (uint64_t)(i > 0 && SEP_DIGIT(s[i - 1]));
                    const uint64_t events = (~al2 & al1 & ~al) | lfs | (dg & ~dg1) | (dots & dg1);
                    if (!events) {
                        h = (unsigned)(((al >> 63) & 1) | (((al >> 62) & 1) << 1) |
                                       (((al >> 61) & 1) << 2));
                        backoff64 = 64;
                        i += 64;
                        continue;
                    }
                }
            }
            const __m128i x = _mm_loadu_si128((const __m128i *)(s + i));
            if (_mm_movemask_epi8(x)) { /* a byte outside ASCII */
                scalar_until = i + 16;
                break;
            }
            const __m128i flip = _mm_set1_epi8((char)0x80);
            const __m128i d = _mm_xor_si128(_mm_sub_epi8(x, _mm_set1_epi8('0')), flip);
            const __m128i digit = _mm_cmplt_epi8(d, _mm_set1_epi8((char)(0x80 + 10)));
            const __m128i l = _mm_sub_epi8(_mm_or_si128(x, _mm_set1_epi8(0x20)), _mm_set1_epi8('a'));
            const __m128i letter = _mm_cmplt_epi8(_mm_xor_si128(l, flip),
                                                  _mm_set1_epi8((char)(0x80 + 26)));
            const __m128i dotsep = _mm_or_si128(
                _mm_or_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8('.')),
                             _mm_cmpeq_epi8(x, _mm_set1_epi8('_'))),
                _mm_cmpeq_epi8(x, _mm_set1_epi8('/')));
            const uint32_t d16 = (uint32_t)_mm_movemask_epi8(digit);
            const uint32_t lf16 = (uint32_t)_mm_movemask_epi8(_mm_cmpeq_epi8(x, _mm_set1_epi8('\n')));
            /* Bit k + 3: byte i + k is a letter or digit (the three before from `h`). */
            const uint32_t a = ((h >> 2) & 1) | (((h >> 1) & 1) << 1) | ((h & 1) << 2) |
                               ((uint32_t)_mm_movemask_epi8(_mm_or_si128(digit, letter)) << 3);
            /* Bit k: byte i + k - 1 is a digit. */
            const uint32_t dm = (i > 0 && SEP_DIGIT(s[i - 1])) | (d16 << 1);
            const uint32_t single_end = ~(a >> 1) & (a >> 2) & ~(a >> 3);
            const uint32_t events = (single_end | lf16 | (d16 & ~dm) |
                                     ((uint32_t)_mm_movemask_epi8(dotsep) & dm)) & 0xffffu;
            if (!events) {
                h = SH_HPRE(a, 16);
                i += 16;
                continue;
            }
            mm = a;
            block = i;
            block_end = i + 16;
            pending = events;
            const int k = __builtin_ctz(pending);
            pending &= pending - 1;
            i = block + k;
            h = SH_HPRE(mm, k);
            break;
        }
    step:;
#endif
        const uint8_t t = i < n ? sh_class[s[i]] : 0;
        h = ((h << 1) | (t & SH_ALNUM)) & 7;
        if ((h & 7) == 2) {
            /* A single character at i - 1. A chain goes on while singles follow each other
             * with one to nine other characters between them, none a line feed, letter or
             * digit (nine: the widest gap of a run, the word break of a four-character
             * separator, `', ' ', '`). */
            const Py_ssize_t p = i - 1, gap = p - last_single - 1;
            int joined = last_single >= 0 && gap <= 9 && last_lf < last_single;
            for (Py_ssize_t k = last_single + 1; joined && k < p; k++)
                joined = !(sh_class[s[k]] & SH_ALNUM); /* no word between them */
            if (joined) {
                if (chain_start < 0) {
                    chain_start = last_single;
                    chain_singles = 1;
                    chain_letters = (sh_class[s[last_single]] & SH_LETTER) != 0;
                    chain_sep = -1;
                    chain_mixed = 0;
                }
                chain_singles++;
                chain_letters |= (sh_class[s[p]] & SH_LETTER) != 0;
                if (gap > 1 || (chain_sep >= 0 && chain_sep != s[p - 1])) chain_mixed = 1;
                chain_sep = s[p - 1];
                /* A run has four singles at least: shorter chains (`F,85,0,0` in a CSV row)
                 * are never reported. */
                if (chain_singles == 4) {
                    if (pairs_push(&b, 1, chain_start) < 0) goto fail;
                    chain_at = b.n - 2;
                }
            } else if (chain_start >= 0) {
                if (chain_at >= 0 && sh_chain_end(&b, chain_at, chain_singles, chain_letters,
                                                  chain_mixed, max_digits, last_single) < 0)
                    goto fail;
                chain_start = chain_at = -1;
            }
            last_single = p;
        }
        if (t & SH_LF) last_lf = i;
        /* Events: a line feed, the first digit of a run of digits, one of `._/` after one. */
        const uint8_t prev = i > 0 ? sh_class[s[i - 1]] : 0;
        if (!(t & (SH_DIGIT | SH_LF | SH_DOTSEP)) || ((t & SH_DIGIT) && (prev & SH_DIGIT)) ||
            ((t & (SH_DOTSEP | SH_LF)) == SH_DOTSEP && !(prev & SH_DIGIT)))
            continue;
        if (t & SH_LF) {
            if (i + 1 < n && short_line_pair(s, n, i + 1) && pairs_push(&b, 4, i + 1) < 0) goto fail;
        } else if (t & SH_DIGIT) {
            /* A word of letters, maybe one group separator, then these digits. */
            Py_ssize_t w = i - 1;
            int glued = 1; /* nothing or a blank between the word and the digits */
            if (w >= 1 && (sh_class[s[w]] & SH_GROUP) && (sh_class[s[w - 1]] & SH_LETTER)) {
                glued = s[w] == ' ' || s[w] == 0xa0;
                w--;
            }
            const Py_ssize_t word_end = w + 1;
            if (w < 0 || !(sh_class[s[w]] & SH_LETTER)) continue;
            while (w > 0 && (sh_class[s[w - 1]] & SH_LETTER)) w--;
            if (w > 0 && (sh_class[s[w - 1]] & SH_ALNUM)) continue;
            if (word_end - w > max_word) continue; /* longer than any word that begins a code */
            Py_ssize_t m = i;
            while (m < n && (sh_class[s[m]] & SH_DIGIT)) m++;
            if (m + 1 >= n || !(sh_class[s[m]] & SH_GROUP) || !(sh_class[s[m + 1]] & SH_DIGIT))
                continue;
            if (s[m] == '.' && glued) {
                /* `loss 0.1234`, `I63.9`: a decimal after a word, or a code with one decimal
                 * point, is not a number in groups (`MRN.5106.9856` is). */
                Py_ssize_t e = m + 1;
                while (e < n && (sh_class[s[e]] & SH_DIGIT)) e++;
                if (e + 1 >= n || !(sh_class[s[e]] & SH_GROUP) || !(sh_class[s[e + 1]] & SH_DIGIT))
                    continue;
            }
            if (pairs_push(&b, 2, w) < 0 || pairs_push(&b, 6, word_end) < 0) goto fail;
        } else if (i > 0 && (sh_class[s[i - 1]] & SH_DIGIT)) {
            /* One of `._/` or NBSP after digits: digits, it, digits, it again, a digit, and
             * `min_digits` digits in the run (fewer are versions and dates, not a phone). */
            Py_ssize_t w = i - 1;
            while (w > 0 && (sh_class[s[w - 1]] & SH_DIGIT)) w--;
            if (w > 0 && ((sh_class[s[w - 1]] & SH_ALNUM) || s[w - 1] == '.')) continue;
            Py_ssize_t m = i, digits = i - w, groups = 1;
            while (m + 1 < n && s[m] == s[i] && (sh_class[s[m + 1]] & SH_DIGIT)) {
                Py_ssize_t e = m + 1;
                while (e < n && (sh_class[s[e]] & SH_DIGIT)) e++;
                digits += e - m - 1;
                groups++;
                m = e;
            }
            if (groups >= 3 && digits >= min_digits && pairs_push(&b, 3, w) < 0) goto fail;
        }
    }
    if (chain_at >= 0 &&
        sh_chain_end(&b, chain_at, chain_singles, chain_letters, chain_mixed, max_digits,
                     last_single) < 0)
        goto fail;
    PyObject *res = PyBytes_FromStringAndSize((const char *)b.data, b.n * (Py_ssize_t)sizeof(int64_t));
    free(b.data);
    free(proxy);
    return res;
fail:
    free(b.data);
    free(proxy);
    return PyErr_NoMemory();
}

/* set_simd(on) -> the previous setting: whether the SSE2 steps run (for the tests, which
 * compare them with the scalar code on the same strings). */
static PyObject *py_set_simd(PyObject *mod, PyObject *arg) {
    (void)mod;
    const int on = PyObject_IsTrue(arg);
    if (on < 0) return NULL;
    const int before = use_simd;
    use_simd = on;
    return PyBool_FromLong(before);
}

static PyMethodDef module_methods[] = {
    {"set_simd", py_set_simd, METH_O, "set_simd(on) -> previous: whether the SSE2 steps run"},
    {"plain_display", py_plain_display, METH_O,
     "plain_display(text) -> bool: ASCII with no control (but tab, newline), '<' or '&'"},
    {"markup_joins", py_markup_joins, METH_O,
     "markup_joins(buf) -> bool: whether HTML display could join text kept apart (see source)"},
    {"tokens", py_tokens, METH_O, "tokens(buf) -> bytes of int64 quintuples"},
    {"lower_ascii", py_lower_ascii, METH_O, "lower_ascii(text) -> lower-cased ASCII bytes"},
    {"text_spans", py_text_spans, METH_O, "text_spans(text) -> candidate spans (see the source)"},
    {"keep_spans", py_keep_spans, METH_VARARGS,
     "keep_spans(text, starts, ends, date) -> bytes: 0 drop, 1 keep, 2 undecided per match"},
    {"dates_in_text", py_dates_in_text, METH_O,
     "dates_in_text(text) -> (matches, windows) of the date pattern (see the source)"},
    {"date_counts", py_date_counts, METH_O,
     "date_counts(text) -> (distinct matches with counts, windows) (see the source)"},
    {"label_words", py_label_words, METH_VARARGS,
     "label_words(text, words) -> int: bit k set when words[k] occurs, ASCII case folded"},
    {"char_offsets", py_char_offsets, METH_VARARGS,
     "char_offsets(raw, offsets) -> bytes: character offsets of ascending byte offsets"},
    {"label_windows", py_label_windows, METH_VARARGS,
     "label_windows(text, words, before, after) -> bytes of int64 pairs (see the source)"},
    {"lower_utf8", py_lower_utf8, METH_O,
     "lower_utf8(text) -> text.lower().encode() when only ASCII letters change, else None"},
    {"dense_runs", py_dense_runs, METH_VARARGS,
     "dense_runs(text, min_len) -> runs of printable non-space ASCII with a capital"},
    {"separated_hints", py_separated_hints, METH_VARARGS,
     "separated_hints(text, min_digits, max_digits, max_word) -> where separated values can start (see the source)"},
    {"alnum_table", py_alnum_table, METH_NOARGS, "alnum_table() -> the 65536-byte BMP table"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_scanner", "Compiled core of the identifier scan.", -1, module_methods,
};

PyMODINIT_FUNC PyInit__scanner(void) {
    init_ascii_class();
    init_dense_class();
    for (int c = 0; c < 128; c++) ascii_lower[c] = (uint8_t)((c >= 'A' && c <= 'Z') ? c | 0x20 : c);
    for (int c = 0; c < 256; c++)
        date_scan_class[c] = (c >= '0' && c <= '9') ? 1 : c >= 0x80 ? 2 : c == '\n' ? 3 : 0;
    for (int c = 0; c < 256; c++)
        ascii_token_class[c] = (c >= '0' && c <= '9') ? 1 : (c >= 'a' && c <= 'z') ? 2 : c >= 0x80 ? 3 : 0;
    for (Py_UCS4 c = 0; c < 65536; c++) alnum[c] = (uint8_t)(Py_UNICODE_ISALNUM(c) ? 1 : 0);
    if (PyType_Ready(&MatcherType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&MatcherType);
    if (PyModule_AddObject(m, "Matcher", (PyObject *)&MatcherType) < 0) {
        Py_DECREF(&MatcherType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
