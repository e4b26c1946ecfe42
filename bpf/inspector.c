/* authwire kernel TCP inspector (bcc). tc clsact ingress+egress on the gateway's interfaces, plus two
 * tracepoints that only add facts to flows tc already tracks.
 *
 * Rules (DESIGN.md): only uapi packet headers and tracepoint formats, never a kernel struct dereference
 * (bcc may compile against headers of another kernel version). Observe, never alter: every path returns
 * TC_ACT_UNSPEC ("no opinion"), so later tc filters still run and the packet's verdict is unchanged;
 * TC_ACT_OK would end classification and hide packets from filters behind ours. The one exception is
 * opt-in and compiled in only with AW_ENFORCE (`serve --enforce`): a new SYN (SYN without ACK) arriving
 * at ingress from a source in the `blocked` map gets TC_ACT_SHOT. Without AW_ENFORCE the same check only
 * counts "would drop" and the program contains no verdict but TC_ACT_UNSPEC.
 * Compile-time parameters from the loader: AW_MAX_FLOWS, AW_RECENT_SLOTS (power of two), AW_MAX_BLOCKED,
 * AW_ENFORCE (defined or not).
 * Decoded by sidecar/authwire/kernel/events.py; loaded and attached by sidecar/authwire/kernel/loader.py. */
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/tcp.h>
#include <uapi/linux/pkt_cls.h>
#include "inspector.h"

#ifndef AW_MAX_FLOWS
#define AW_MAX_FLOWS 65536
#endif
#ifndef AW_MAX_BLOCKED
#define AW_MAX_BLOCKED 16384
#endif
#ifndef AW_RECENT_SLOTS
#define AW_RECENT_SLOTS 131072
#endif

#define AW_VERDICT TC_ACT_UNSPEC
#define AW_ETH_P_8021Q 0x8100
#define AW_ETH_P_8021AD 0x88A8

BPF_TABLE("lru_hash", struct aw_key, struct aw_flow, flows, AW_MAX_FLOWS);
BPF_PERCPU_ARRAY(counters, u64, AW_C_MAX);
BPF_PERCPU_ARRAY(scratch, struct aw_flow, 1);
/* Direct-mapped memory of keys recently tracked: hash|1 while open, hash&~1 after close. An LRU map does
 * not report evictions; a later packet of an open flow whose key is gone while its slot still holds the
 * "open" hash is an eviction we can count (collisions only make us undercount). */
BPF_ARRAY(recent, u32, AW_RECENT_SLOTS);
/* Blocked source addresses (16 bytes, IPv4-mapped): a plain hash, so an entry is never evicted behind
 * user space's back; user space inserts (refusing loopback and its allow-list) and removes expired ones. */
struct aw_addr {
    u8 b[16];
};
BPF_HASH(blocked, struct aw_addr, struct aw_block, AW_MAX_BLOCKED);
/* Keyed by socket address (tracepoint skaddr): facts waiting for tc egress to bind that socket. */
BPF_TABLE("lru_hash", u64, struct aw_sockfact, sockfacts, 4096);
/* 16 MiB: ~47k events (~15k new connections) of burst while the poller is starved of CPU. */
BPF_RINGBUF_OUTPUT(events, 4096);

/* History letters (Zeek): bit index, upper case for the client, lower case for the server. */
#define H_SYN 0
#define H_SYNACK 1
#define H_ACK 2
#define H_DATA 3
#define H_FIN 4
#define H_RST 5
#define H_RETRANS 6
#define H_ZEROWIN 7

static __always_inline void count(u32 slot)
{
    u64 *c = counters.lookup(&slot);
    if (c)
        *c += 1;   /* per-CPU slot: no atomics needed */
}

static __always_inline u32 key_hash(const struct aw_key *k)
{
    const u32 *w = (const u32 *)k;
    u32 h = 2166136261u;
#pragma unroll
    for (int i = 0; i < (int)(sizeof(struct aw_key) / 4); i++) {
        h ^= w[i];
        h *= 16777619u;
    }
    /* murmur3 finalizer: word-wise FNV leaves the low bits (the slot index) poorly mixed. */
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    return h;
}

static __always_inline void remember(const struct aw_key *k, int open)
{
    u32 h = key_hash(k);
    u32 idx = h & (AW_RECENT_SLOTS - 1);
    u32 *slot = recent.lookup(&idx);
    if (slot)
        *slot = open ? (h | 1) : (h & ~1u);
}

static __always_inline char history_letter(int bit)
{
    switch (bit) {
    case H_SYN: return 'S';
    case H_SYNACK: return 'H';
    case H_ACK: return 'A';
    case H_DATA: return 'D';
    case H_FIN: return 'F';
    case H_RST: return 'R';
    case H_RETRANS: return 'T';
    default: return 'W';
    }
}

static __always_inline void history(struct aw_flow *f, int d, int bit)
{
    if (f->dir[d & 1].seen & (1 << bit))
        return;
    f->dir[d & 1].seen |= (1 << bit);
    u32 n = f->history_len;
    if (n >= AW_HISTORY_LEN)
        return;
    char c = history_letter(bit);
    f->history[n] = d ? c + ('a' - 'A') : c;   /* lower case: the server */
    f->history_len = n + 1;
}

static __always_inline void emit(const struct aw_key *k, struct aw_flow *f, u32 type, u32 reason)
{
    struct aw_event *ev = events.ringbuf_reserve(sizeof(struct aw_event));
    if (!ev) {
        count(AW_C_RINGBUF_RESERVE_FAILED);
        return;
    }
    ev->type = type;
    ev->reason = reason;
    __builtin_memcpy(&ev->key, k, sizeof(*k));
    __builtin_memcpy(&ev->flow, f, sizeof(*f));
    events.ringbuf_submit(ev, 0);
}

/* Sequence comparisons modulo 2^32 (RFC 793 arithmetic). */
static __always_inline int seq_before(u32 a, u32 b) { return (s32)(a - b) < 0; }

struct aw_pkt {
    struct aw_key key;
    u32 seq;
    u32 ack_seq;
    u32 payload;
    u16 window;
    u8 flags;       /* TCP flags byte: FIN 0x01 SYN 0x02 RST 0x04 PSH 0x08 ACK 0x10 URG 0x20 ECE 0x40 CWR 0x80 */
};

#define F_FIN 0x01
#define F_SYN 0x02
#define F_RST 0x04
#define F_ACK 0x10
#define F_ECE 0x40
#define F_CWR 0x80

/* Option-parse state lives in a map value, not in registers: values read back from a map are unknown to
 * the verifier, so every loop iteration reaches the loop head in the same state and is pruned instead of
 * being explored once per possible offset (which exceeds the verifier's 1M-instruction budget). */
struct aw_optstate {
    u32 off;
    u32 pad;
    u8 opts[64];
};
BPF_PERCPU_ARRAY(optscratch, struct aw_optstate, 1);

/* Parse the SYN's options into s. Returns 0, or -1 when an option's length is invalid or overruns. */
static __always_inline int parse_syn_options(struct __sk_buff *skb, u32 opt_off, u32 optlen, struct aw_syn *s)
{
    u32 zero = 0;
    struct aw_optstate *st = optscratch.lookup(&zero);
    if (!st)
        return -1;
    if (optlen > 40)
        return -1;
    if (optlen == 0)
        return 0;
    if (bpf_skb_load_bytes(skb, opt_off, st->opts, optlen) < 0)
        return -1;
    st->off = 0;
    for (int i = 0; i < AW_MAX_OPTIONS; i++) {
        u32 off = *(volatile u32 *)&st->off;   /* force a map read each iteration */
        if (off >= optlen)
            break;
        u8 kind = st->opts[off & 63];
        s->option_kinds[i] = kind;
        s->n_options = i + 1;
        if (kind == 0)     /* EOL: the rest is padding */
            break;
        if (kind == 1) {   /* NOP */
            st->off = off + 1;
            continue;
        }
        u32 olen = st->opts[(off + 1) & 63];
        if (off + 2 > optlen || olen < 2 || off + olen > optlen)
            return -1;
        if (kind == 2 && olen == 4)
            s->mss = ((u16)st->opts[(off + 2) & 63] << 8) | st->opts[(off + 3) & 63];
        else if (kind == 3 && olen == 3)
            s->window_scale = st->opts[(off + 2) & 63];
        else if (kind == 4)
            s->sack_permitted = 1;
        else if (kind == 8 && olen == 10) {
            s->timestamps = 1;
            s->ts_val = ((u32)st->opts[(off + 2) & 63] << 24) | ((u32)st->opts[(off + 3) & 63] << 16) |
                        ((u32)st->opts[(off + 4) & 63] << 8) | st->opts[(off + 5) & 63];
        }
        st->off = off + olen;
    }
    return 0;
}

/* Make the first `need` bytes linear, pulling only when the headers are not (rare: the stack keeps headers
 * linear). Pulling on every packet would be expensive (TCP's clones would need unsharing) and pointless:
 * only headers are read directly; the TCP options are copied out with bpf_skb_load_bytes. */
static __always_inline int ensure(struct __sk_buff *skb, u32 need)
{
    if ((long)skb->data + need <= (long)skb->data_end)
        return 0;
    if (need > skb->len)
        return -1;
    return bpf_skb_pull_data(skb, need) < 0 ? -1 : 0;
}

#define PARSE_ERROR()                 \
    do {                              \
        count(AW_C_PARSE_ERRORS);     \
        return AW_VERDICT;            \
    } while (0)

static __always_inline int key_equal(const struct aw_key *a, const struct aw_key *b)
{
    const u64 *x = (const u64 *)a, *y = (const u64 *)b;
    return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3] && x[4] == y[4];
}

/* Linux TCP states (include/net/tcp_states.h, stable: also the tracepoint's newstate values). */
#define TS_TIME_WAIT 6
#define TS_CLOSE 7
#define TS_LISTEN 10
#define TS_NEW_SYN_RECV 12

/* tc egress: the packet's own socket is this direction's local sender. Bind it to the flow so that
 * tracepoint facts are taken from that socket only (a socket with the same 4-tuple in another network
 * namespace fires the same tracepoints). Request socks (SYN-ACK), time-wait socks, listeners and the
 * per-namespace control socket (kernel RSTs) are not the connection's socket and are skipped. */
static __always_inline void bind_socket(struct __sk_buff *skb, struct aw_flow *f, int d,
                                        const struct aw_key *key)
{
    struct bpf_sock *sk = skb->sk;
    if (!sk)
        return;
    u32 st = sk->state;
    if (st == TS_TIME_WAIT || st == TS_CLOSE || st == TS_LISTEN || st == TS_NEW_SYN_RECV)
        return;
    u64 addr = (u64)(long)sk;
    if (f->dir[d & 1].sk == addr)
        return;
    f->dir[d & 1].sk = addr;
    struct aw_sockfact *pf = sockfacts.lookup(&addr);
    if (pf) {
        if (key_equal(&pf->key, key)) {
            if (pf->socket_state)
                f->dir[d & 1].socket_state = pf->socket_state;
            f->dir[d & 1].stack_retransmits += pf->stack_retransmits;
        }
        sockfacts.delete(&addr);
    }
}

static __always_inline int is_loopback(const u8 *a)
{
    const u64 *w = (const u64 *)a;
    if (w[0] == 0 && a[8] == 0 && a[9] == 0 && a[10] == 0xff && a[11] == 0xff)
        return a[12] == 127;   /* IPv4 127.0.0.0/8 (stored IPv4-mapped) */
    u64 one_be = 0;
    ((u8 *)&one_be)[7] = 1;
    return w[0] == 0 && w[1] == one_be;   /* ::1 */
}

/* A new SYN from a blocked source: count it, and return 1 (drop) only when compiled with AW_ENFORCE.
 * Loopback-sourced SYNs and SYNs arriving on lo (ifindex 1 in every namespace) are never dropped, even
 * if such an entry got into the map. Expired entries are ignored (user space deletes them). */
static __always_inline int blocked_syn(struct __sk_buff *skb, const u8 *src)
{
    struct aw_addr a;
    __builtin_memcpy(a.b, src, 16);
    struct aw_block *b = blocked.lookup(&a);
    if (!b)
        return 0;
    if (bpf_ktime_get_ns() >= b->expires_ns)
        return 0;
    if (skb->ifindex == 1 || is_loopback(src)) {
        count(AW_C_BLOCK_LOOPBACK_PASSED);
        return 0;
    }
#ifdef AW_ENFORCE
    __sync_fetch_and_add(&b->dropped, 1);
    count(AW_C_BLOCK_DROPPED);
    return 1;
#else
    __sync_fetch_and_add(&b->would_drop, 1);
    count(AW_C_BLOCK_WOULD_DROP);
    return 0;
#endif
}

static __always_inline int inspect(struct __sk_buff *skb, int egress)
{
    count(AW_C_PACKETS);
    void *data = (void *)(long)skb->data;
    void *data_end = (void *)(long)skb->data_end;

    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end)
        PARSE_ERROR();
    u16 proto = eth->h_proto;
    u32 l3off = sizeof(struct ethhdr);
    if (proto == bpf_htons(AW_ETH_P_8021Q) || proto == bpf_htons(AW_ETH_P_8021AD)) {
        if (ensure(skb, l3off + 4) < 0)
            PARSE_ERROR();
        data = (void *)(long)skb->data;
        data_end = (void *)(long)skb->data_end;
        u16 *inner = data + l3off + 2;
        if ((void *)(inner + 1) > data_end)
            PARSE_ERROR();
        count(AW_C_VLAN);
        proto = *inner;
        l3off += 4;
    }

    struct aw_pkt pkt = {};
    u8 src_addr[16] = {}, dst_addr[16] = {};
    u8 ttl, tos, df = 0, ip_opts = 0, ipver;
    u16 ip_id = 0;
    u32 l4off;
    u32 l4_len;   /* TCP header + payload, from the IP header's length field */

    if (proto == bpf_htons(ETH_P_IP)) {
        if (ensure(skb, l3off + sizeof(struct iphdr)) < 0)
            PARSE_ERROR();
        data = (void *)(long)skb->data;
        data_end = (void *)(long)skb->data_end;
        struct iphdr *ip = data + l3off;
        if ((void *)(ip + 1) > data_end)
            PARSE_ERROR();
        if (ip->ihl < 5)
            PARSE_ERROR();
        if (ip->protocol != IPPROTO_TCP) {
            count(AW_C_NON_TCP);
            return AW_VERDICT;
        }
        u16 frag = bpf_ntohs(ip->frag_off);
        if (frag & 0x1fff) {   /* non-first fragment: no TCP header here */
            count(AW_C_NON_TCP);
            return AW_VERDICT;
        }
        u32 ihl = ip->ihl * 4;
        u32 tot = bpf_ntohs(ip->tot_len);
        if (tot < ihl)
            PARSE_ERROR();
        l4off = l3off + ihl;
        l4_len = tot - ihl;
        ttl = ip->ttl;
        tos = ip->tos;
        df = (frag & 0x4000) ? 1 : 0;
        ip_id = bpf_ntohs(ip->id);
        ip_opts = ihl - 20;
        ipver = 4;
        src_addr[10] = 0xff;
        src_addr[11] = 0xff;
        dst_addr[10] = 0xff;
        dst_addr[11] = 0xff;
        __builtin_memcpy(&src_addr[12], &ip->saddr, 4);
        __builtin_memcpy(&dst_addr[12], &ip->daddr, 4);
    } else if (proto == bpf_htons(ETH_P_IPV6)) {
        if (ensure(skb, l3off + sizeof(struct ipv6hdr)) < 0)
            PARSE_ERROR();
        data = (void *)(long)skb->data;
        data_end = (void *)(long)skb->data_end;
        struct ipv6hdr *ip6 = data + l3off;
        if ((void *)(ip6 + 1) > data_end)
            PARSE_ERROR();
        if (ip6->nexthdr != IPPROTO_TCP) {   /* extension headers are not followed */
            count(AW_C_NON_TCP);
            return AW_VERDICT;
        }
        l4off = l3off + sizeof(struct ipv6hdr);
        l4_len = bpf_ntohs(ip6->payload_len);
        if (l4_len == 0)   /* BIG TCP jumbogram: fall back to the skb length */
            l4_len = skb->len - l4off;
        ttl = ip6->hop_limit;
        tos = (ip6->priority << 4) | (ip6->flow_lbl[0] >> 4);
        ipver = 6;
        __builtin_memcpy(src_addr, &ip6->saddr, 16);
        __builtin_memcpy(dst_addr, &ip6->daddr, 16);
    } else {
        count(AW_C_NON_TCP);
        return AW_VERDICT;
    }

    if (l4_len < sizeof(struct tcphdr) || ensure(skb, l4off + sizeof(struct tcphdr)) < 0)
        PARSE_ERROR();
    data = (void *)(long)skb->data;
    data_end = (void *)(long)skb->data_end;
    l4off &= 0xff;   /* <= 18 + 60: tells the verifier the offset is bounded */
    struct tcphdr *tcp = data + l4off;
    if ((void *)(tcp + 1) > data_end)
        PARSE_ERROR();
    u32 doff = tcp->doff * 4;
    if (doff < 20 || doff > l4_len)
        PARSE_ERROR();
    if (l4off + doff > skb->len)   /* header beyond the packet */
        PARSE_ERROR();

    pkt.flags = ((u8 *)tcp)[13];
    pkt.seq = bpf_ntohl(tcp->seq);
    pkt.ack_seq = bpf_ntohl(tcp->ack_seq);
    pkt.window = bpf_ntohs(tcp->window);
    pkt.payload = l4_len - doff;
    u16 sport = tcp->source, dport = tcp->dest;

    /* Order the endpoints so both directions share one key. */
    u64 s_hi, s_lo, d_hi, d_lo;
    __builtin_memcpy(&s_hi, src_addr, 8);
    __builtin_memcpy(&s_lo, src_addr + 8, 8);
    __builtin_memcpy(&d_hi, dst_addr, 8);
    __builtin_memcpy(&d_lo, dst_addr + 8, 8);
    int src_first = s_hi < d_hi || (s_hi == d_hi && (s_lo < d_lo || (s_lo == d_lo && sport <= dport)));
    if (src_first) {
        __builtin_memcpy(pkt.key.addr_a, src_addr, 16);
        __builtin_memcpy(pkt.key.addr_b, dst_addr, 16);
        pkt.key.port_a = sport;
        pkt.key.port_b = dport;
    } else {
        __builtin_memcpy(pkt.key.addr_a, dst_addr, 16);
        __builtin_memcpy(pkt.key.addr_b, src_addr, 16);
        pkt.key.port_a = dport;
        pkt.key.port_b = sport;
    }

    u8 fl = pkt.flags;
    int is_syn = (fl & F_SYN) && !(fl & F_ACK);
    if (is_syn && !egress && blocked_syn(skb, src_addr)) {
#ifdef AW_ENFORCE
        return TC_ACT_SHOT;   /* the program's only verdict other than TC_ACT_UNSPEC */
#endif
    }
    struct aw_flow *f = flows.lookup(&pkt.key);
    /* Precise time only where it is a fact we report (handshake, FIN/RST, new flows); the coarse clock
     * (same CLOCK_MONOTONIC base, tick resolution) for last-seen on established traffic saves ~25 ns. */
    u64 now = (!f || (fl & (F_SYN | F_FIN | F_RST)) || f->state < AW_ST_ESTABLISHED) ? bpf_ktime_get_ns()
                                                                                    : bpf_ktime_get_coarse_ns();

    if (f && is_syn && f->state >= AW_ST_CLOSED)
        f = 0;   /* a new connection reusing a closed tuple (port reuse): start a new flow */

    if (!f) {
        u32 zero = 0;
        struct aw_flow *n = scratch.lookup(&zero);
        if (!n)
            return AW_VERDICT;
        __builtin_memset(n, 0, sizeof(*n));
        n->syn.window_scale = -1;
        if (is_syn) {
            if (parse_syn_options(skb, l4off + sizeof(struct tcphdr), doff - 20, &n->syn) < 0) {
                count(AW_C_PARSE_ERRORS);
                return AW_VERDICT;
            }
            n->client_is_a = src_first;
            n->state = AW_ST_SYN_SENT;
            n->syn_ns = now;
            n->syn.ttl = ttl;
            n->syn.df = df;
            n->syn.ip_id = ip_id;
            n->syn.ecn = tos & 3;
            n->syn.tcp_ecn = (fl & (F_ECE | F_CWR)) == (F_ECE | F_CWR);
            n->syn.window = pkt.window;
            n->syn.ip_version = ipver;
            n->syn.ip_options_len = ip_opts;
            n->syn.payload_bytes = pkt.payload > 0xffff ? 0xffff : pkt.payload;
        } else {
            u32 h = key_hash(&pkt.key);
            u32 idx = h & (AW_RECENT_SLOTS - 1);
            u32 *slot = recent.lookup(&idx);
            if (slot && *slot == (h & ~1u)) {
                /* The flow closed and was evicted since: a late packet, not a new connection. */
                count(AW_C_LATE_AFTER_EVICTED_CLOSE);
                return AW_VERDICT;
            }
            if (fl & F_RST) {   /* a reset for nothing we track (e.g. a closed port) */
                count(AW_C_UNTRACKED_RST);
                return AW_VERDICT;
            }
            if (slot && *slot == (h | 1)) {
                count(AW_C_EVICTIONS);
                emit(&pkt.key, n, AW_EV_CLOSED, AW_CLOSE_EVICTED);
            }
            /* Seen mid-stream: guess the server is the lower port (a listening service). */
            n->mid_stream = 1;
            n->state = AW_ST_ESTABLISHED;
            int src_is_server = bpf_ntohs(sport) < bpf_ntohs(dport);
            n->client_is_a = src_is_server ? !src_first : src_first;
            count(AW_C_MIDSTREAM_FLOWS);
        }
        n->first_ns = now;
        n->last_ns = now;
        n->ifindex = skb->ifindex;
        if (flows.update(&pkt.key, n) != 0)
            return AW_VERDICT;
        f = flows.lookup(&pkt.key);
        if (!f)
            return AW_VERDICT;
        if (f->first_ns == now) {   /* we created it (another CPU may have raced us) */
            count(AW_C_FLOWS_OPENED);
            remember(&pkt.key, 1);
            emit(&pkt.key, f, AW_EV_OPENED, AW_CLOSE_NONE);
        }
    }

    int d = (f->client_is_a == src_first) ? 0 : 1;   /* 0: client -> server */
    if (egress)
        bind_socket(skb, f, d, &pkt.key);
    u32 segs = skb->gso_segs > 1 ? skb->gso_segs : 1;
    /* Plain adds on the hot path (an atomic costs ~9 ns each here): packets of one direction of one TCP
     * flow are not processed concurrently (one socket transmits under its lock; RSS keeps a flow on one
     * receive queue), and the two directions update different fields. */
    f->dir[d].packets += segs;
    f->dir[d].bytes += pkt.payload;
    if (now > f->last_ns)
        f->last_ns = now;

    u32 seq_end = pkt.seq + pkt.payload + ((fl & (F_SYN | F_FIN)) ? 1 : 0);
    if (fl & F_SYN) {
        if (d == 0 && !(fl & F_ACK)) {
            history(f, 0, H_SYN);
            if (f->dir[0].seq_valid)
                __sync_fetch_and_add(&f->dir[0].retransmits, 1);   /* SYN sent again */
        } else if (d == 1 && (fl & F_ACK)) {
            history(f, 1, H_SYNACK);
            if (f->synack_ns == 0) {
                f->synack_ns = now;
                f->synack_seq = pkt.seq;
                if (f->state == AW_ST_SYN_SENT)
                    f->state = AW_ST_SYN_RECEIVED;
            } else {
                __sync_fetch_and_add(&f->dir[1].retransmits, 1);
            }
        }
    } else if (f->dir[d].seq_valid && (pkt.payload || (fl & F_FIN)) && seq_before(pkt.seq, f->dir[d].snd_max)) {
        /* In segments, like packets: a resent GSO frame counts each of its segments, and one that also
         * carries new data past snd_max counts only the segments below it. */
        u32 resent = segs;
        u32 gso = skb->gso_size;
        u32 below = f->dir[d].snd_max - pkt.seq;
        if (segs > 1 && gso && below < pkt.payload)
            resent = (below + gso - 1) / gso;
        __sync_fetch_and_add(&f->dir[d].retransmits, resent);
        history(f, d, H_RETRANS);
    }
    if (!f->dir[d].seq_valid || seq_before(f->dir[d].snd_max, seq_end)) {
        f->dir[d].snd_max = seq_end;
        f->dir[d].seq_valid = 1;
    }

    if (d == 0 && (fl & F_ACK) && !(fl & (F_SYN | F_RST)) && f->state == AW_ST_SYN_RECEIVED &&
        pkt.ack_seq == f->synack_seq + 1) {
        /* No ring-buffer event: user space already knows the flow (opened) and reads an open flow's
         * facts from this map when it needs them; a third event per connection cost the poller ~1/3 more. */
        f->state = AW_ST_ESTABLISHED;
        f->established_ns = now;
    }
    if (pkt.payload)
        history(f, d, H_DATA);
    else if ((fl & F_ACK) && !(fl & (F_SYN | F_FIN | F_RST)))
        history(f, d, H_ACK);
    if (pkt.window == 0 && !(fl & (F_SYN | F_RST))) {
        __sync_fetch_and_add(&f->dir[d].zero_windows, 1);
        history(f, d, H_ZEROWIN);
    }
    if (fl & F_FIN) {
        __sync_fetch_and_add(&f->dir[d].fins, 1);
        history(f, d, H_FIN);
        if (!f->closed_by)
            f->closed_by = d ? AW_BY_SERVER : AW_BY_CLIENT;
        if (f->state < AW_ST_CLOSING)
            f->state = AW_ST_CLOSING;
        if (f->dir[0].fins && f->dir[1].fins && !f->close_reported) {
            f->close_reported = 1;
            f->state = AW_ST_CLOSED;
            f->close_ns = now;
            remember(&pkt.key, 0);
            emit(&pkt.key, f, AW_EV_CLOSED, AW_CLOSE_FIN);
        }
    }
    if (fl & F_RST) {
        __sync_fetch_and_add(&f->dir[d].rsts, 1);
        history(f, d, H_RST);
        if (!f->close_reported) {
            f->close_reported = 1;
            if (!f->closed_by)
                f->closed_by = d ? AW_BY_SERVER : AW_BY_CLIENT;
            f->state = AW_ST_RESET;
            f->close_ns = now;
            remember(&pkt.key, 0);
            emit(&pkt.key, f, AW_EV_CLOSED, AW_CLOSE_RST);
        }
    }
    return AW_VERDICT;
}

int aw_tc_ingress(struct __sk_buff *skb) { return inspect(skb, 0); }
int aw_tc_egress(struct __sk_buff *skb) { return inspect(skb, 1); }

/* Tracepoints: build the same key from the format's address fields (never from struct sock). */
static __always_inline struct aw_flow *tp_flow(u16 family, const u8 *saddr4, const u8 *daddr4,
                                               const u8 *saddr6, const u8 *daddr6, u16 sport_host,
                                               u16 dport_host, struct aw_key *k, int *local_is_a)
{
    u8 s[16] = {}, dd[16] = {};
    if (family == 2) {
        s[10] = 0xff; s[11] = 0xff; dd[10] = 0xff; dd[11] = 0xff;
        __builtin_memcpy(&s[12], saddr4, 4);
        __builtin_memcpy(&dd[12], daddr4, 4);
    } else if (family == 10) {
        __builtin_memcpy(s, saddr6, 16);
        __builtin_memcpy(dd, daddr6, 16);
    } else {
        return 0;
    }
    u16 sport = bpf_htons(sport_host), dport = bpf_htons(dport_host);
    u64 s_hi, s_lo, d_hi, d_lo;
    __builtin_memcpy(&s_hi, s, 8);
    __builtin_memcpy(&s_lo, s + 8, 8);
    __builtin_memcpy(&d_hi, dd, 8);
    __builtin_memcpy(&d_lo, dd + 8, 8);
    int src_first = s_hi < d_hi || (s_hi == d_hi && (s_lo < d_lo || (s_lo == d_lo && sport <= dport)));
    if (src_first) {
        __builtin_memcpy(k->addr_a, s, 16);
        __builtin_memcpy(k->addr_b, dd, 16);
        k->port_a = sport;
        k->port_b = dport;
    } else {
        __builtin_memcpy(k->addr_a, dd, 16);
        __builtin_memcpy(k->addr_b, s, 16);
        k->port_a = dport;
        k->port_b = sport;
    }
    *local_is_a = src_first;
    return flows.lookup(k);
}

/* A fact about socket `sk` (tracepoint skaddr) for flow f's direction d: applied only when that socket
 * is the one tc egress bound to the flow; kept aside by socket while the flow has none bound yet (a
 * passive open's child socket changes state before its first packet leaves); ignored for any other
 * socket — the same 4-tuple in another network namespace, which the tuple alone cannot tell apart. */
static __always_inline void socket_fact(struct aw_flow *f, int d, u64 sk, const struct aw_key *k,
                                        int state, u32 retransmits)
{
    u64 bound = f->dir[d & 1].sk;
    if (bound == sk) {
        if (state)
            f->dir[d & 1].socket_state = state;
        if (retransmits)
            __sync_fetch_and_add(&f->dir[d & 1].stack_retransmits, retransmits);
        count(AW_C_TRACEPOINT_FACTS);
        return;
    }
    if (bound) {
        count(AW_C_TRACEPOINT_FOREIGN);
        return;
    }
    struct aw_sockfact *pf = sockfacts.lookup(&sk);
    if (pf && key_equal(&pf->key, k)) {
        if (state)
            pf->socket_state = state;
        pf->stack_retransmits += retransmits;
    } else {
        struct aw_sockfact n = {};
        __builtin_memcpy(&n.key, k, sizeof(n.key));
        n.socket_state = state;
        n.stack_retransmits = retransmits;
        sockfacts.update(&sk, &n);
    }
    count(AW_C_TRACEPOINT_PENDING);
}

TRACEPOINT_PROBE(tcp, tcp_retransmit_skb)
{
    struct aw_key k = {};
    int local_is_a = 0;
    struct aw_flow *f = tp_flow(args->family, args->saddr, args->daddr, args->saddr_v6, args->daddr_v6,
                                args->sport, args->dport, &k, &local_is_a);
    if (!f)
        return 0;   /* only flows tc already tracks */
    int d = (f->client_is_a == local_is_a) ? 0 : 1;
    socket_fact(f, d, (u64)args->skaddr, &k, 0, 1);
    return 0;
}

TRACEPOINT_PROBE(sock, inet_sock_set_state)
{
    if (args->protocol != IPPROTO_TCP)
        return 0;
    struct aw_key k = {};
    int local_is_a = 0;
    struct aw_flow *f = tp_flow(args->family, args->saddr, args->daddr, args->saddr_v6, args->daddr_v6,
                                args->sport, args->dport, &k, &local_is_a);
    if (!f)
        return 0;
    int d = (f->client_is_a == local_is_a) ? 0 : 1;
    socket_fact(f, d, (u64)args->skaddr, &k, args->newstate, 0);
    return 0;
}
