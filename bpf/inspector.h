/* Structs shared between bpf/inspector.c and sidecar/authwire/kernel/events.py (ctypes mirrors).
 * Keep the two in step: tests/kernel/test_layout.py compares them with the layout bcc compiled.
 * Only fixed-size integer fields with natural alignment, so both sides agree without packing. */
#ifndef AUTHWIRE_INSPECTOR_H
#define AUTHWIRE_INSPECTOR_H

#define AW_MAX_OPTIONS 40   /* a TCP header carries at most 40 option bytes, so at most 40 kinds */
#define AW_HISTORY_LEN 24

/* Ring-buffer event types. */
#define AW_EV_OPENED 1
#define AW_EV_ESTABLISHED 2   /* no longer emitted (an open flow's facts are read from the map) */
#define AW_EV_CLOSED 3

/* Why a flow closed (aw_event.reason). */
#define AW_CLOSE_NONE 0
#define AW_CLOSE_FIN 1
#define AW_CLOSE_RST 2
#define AW_CLOSE_EVICTED 3

/* Flow states: same numbers as authwire.v1.ConnectionState. */
#define AW_ST_SYN_SENT 1
#define AW_ST_SYN_RECEIVED 2
#define AW_ST_ESTABLISHED 3
#define AW_ST_CLOSING 4
#define AW_ST_CLOSED 5
#define AW_ST_RESET 6

/* closed_by: same numbers as authwire.v1.CloseInitiator. */
#define AW_BY_CLIENT 1
#define AW_BY_SERVER 2

/* Per-CPU counter slots (names in events.py COUNTER_NAMES, same order). */
#define AW_C_PACKETS 0
#define AW_C_NON_TCP 1
#define AW_C_PARSE_ERRORS 2
#define AW_C_RINGBUF_RESERVE_FAILED 3
#define AW_C_EVICTIONS 4
#define AW_C_FLOWS_OPENED 5
#define AW_C_MIDSTREAM_FLOWS 6
#define AW_C_LATE_AFTER_EVICTED_CLOSE 7
#define AW_C_UNTRACKED_RST 8
#define AW_C_VLAN 9
#define AW_C_TRACEPOINT_FACTS 10
#define AW_C_TRACEPOINT_PENDING 11     /* fact for a socket not yet bound to its flow: kept aside by socket */
#define AW_C_TRACEPOINT_FOREIGN 12     /* same 4-tuple, another socket (e.g. another network namespace) */
#define AW_C_BLOCK_DROPPED 13          /* new SYNs from a blocked source dropped (--enforce) */
#define AW_C_BLOCK_WOULD_DROP 14       /* the same, dry run: counted and passed */
#define AW_C_BLOCK_LOOPBACK_PASSED 15  /* a loopback-sourced SYN matched a block entry: never dropped */
#define AW_C_MAX 16

/* The LRU key: the two endpoints ordered (a < b) so both directions find the same entry. Addresses are
 * 16 bytes, IPv4 stored IPv4-mapped (::ffff:a.b.c.d); ports in network byte order. */
struct aw_key {
    __u8 addr_a[16];
    __u8 addr_b[16];
    __u16 port_a;
    __u16 port_b;
    __u32 pad;
};

/* One direction's counters. dir[0] = client -> server, dir[1] = server -> client. 64 bytes.
 * packets and retransmits are both TCP segments: a GSO/TSO/GRO frame of n segments counts n. */
struct aw_dir {
    __u64 packets;
    __u64 bytes;
    __u64 retransmits;         /* segments resent (sequence went backwards) */
    __u64 sk;                  /* this direction's local sending socket, learnt at tc egress (skb->sk);
                                  only compared with tracepoints' skaddr, never dereferenced. 0 = none */
    __u32 zero_windows;
    __u32 rsts;
    __u32 fins;
    __u32 stack_retransmits;   /* tcp:tcp_retransmit_skb calls for socket `sk` (one per resent frame) */
    __u32 snd_max;             /* highest sequence end seen, for "sequence went backwards" */
    __u16 seen;                /* history letters already recorded, one bit each */
    __u8 seq_valid;
    __u8 socket_state;         /* last TCP state of socket `sk` (sock:inet_sock_set_state) */
    __u8 pad[8];
};

/* Tracepoint facts about a socket that no flow has claimed yet (its first packet has not left through
 * tc egress): merged into the flow when tc egress binds that socket to it, if the tuple matches. */
struct aw_sockfact {
    struct aw_key key;
    __u32 stack_retransmits;
    __u8 socket_state;
    __u8 pad[3];
};

/* The client's SYN as it arrived. */
struct aw_syn {
    __u32 ts_val;
    __u16 ip_id;
    __u16 window;
    __u16 mss;
    __s16 window_scale;        /* -1 = option absent */
    __u16 payload_bytes;
    __u8 ttl;
    __u8 df;
    __u8 ecn;
    __u8 tcp_ecn;
    __u8 sack_permitted;
    __u8 timestamps;
    __u8 ip_version;
    __u8 ip_options_len;
    __u8 n_options;
    __u8 pad[3];
    __u8 option_kinds[AW_MAX_OPTIONS];
};

/* Laid out for the per-packet path: it touches the first 64 bytes (flags + times) and one direction's
 * 64 bytes, so an established packet costs two cache lines; the two directions (often updated from two
 * CPUs at once) never share a line within the value. */
struct aw_flow {
    __u8 client_is_a;          /* 1: the client (SYN sender) is key.addr_a/port_a */
    __u8 state;
    __u8 closed_by;
    __u8 mid_stream;
    __u8 close_reported;
    __u8 history_len;
    __u8 pad[2];
    __u32 synack_seq;
    __u32 ifindex;
    __u64 first_ns;            /* bpf_ktime_get_ns() at creation: with the key, the flow's identity */
    __u64 last_ns;
    __u64 syn_ns;
    __u64 synack_ns;
    __u64 established_ns;
    __u64 close_ns;
    struct aw_dir dir[2];
    struct aw_syn syn;
    char history[AW_HISTORY_LEN];
};

struct aw_event {
    __u32 type;
    __u32 reason;
    struct aw_key key;
    struct aw_flow flow;
};

/* Block list (opt-in response): source address (16 bytes, IPv4-mapped like aw_key) -> entry. */
struct aw_block {
    __u64 expires_ns;          /* bpf_ktime_get_ns() clock; the entry is ignored from then on */
    __u64 dropped;             /* new SYNs dropped (compiled with AW_ENFORCE) */
    __u64 would_drop;          /* new SYNs that would have been dropped (dry run) */
};

#endif
