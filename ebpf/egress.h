/* Sealgate egress enforcement: types and constants shared by the BPF programs
 * (egress.bpf.c) and user space (ext_authz/egress.py reads the #defines and
 * bcc builds ctypes for the structs from the compiled program).
 * Keep every #define a plain integer: user space parses them. */
#ifndef SEALGATE_EGRESS_H
#define SEALGATE_EGRESS_H

#define MAX_AGENT_CGROUPS 1024   /* bounded maps */
#define MAX_ALLOW_RULES 8192
#define MAX_INBOUND_RULES 1024
#define MAX_CGROUP_DEPTH 16      /* ancestor levels searched for the nearest agent */
#define RINGBUF_PAGES 256

#define MODE_ENFORCE 0
#define MODE_AUDIT 1

#define VERDICT_BLOCKED 1
#define VERDICT_AUDITED 2

#define HOOK_CONNECT4 1
#define HOOK_CONNECT6 2
#define HOOK_SENDMSG4 3
#define HOOK_SENDMSG6 4
#define HOOK_SOCK_CREATE 5
#define HOOK_SKB_EGRESS 6        /* a packet of an agent socket, judged by its real destination and device */
#define HOOK_SKB_INGRESS 7       /* a packet arriving for an agent socket */
#define HOOK_BIND4 8
#define HOOK_BIND6 9
#define HOOK_SETSOCKOPT 10

/* why a call or packet was refused (ext_authz/reasons.py names them EGRESS_*) */
#define REASON_DESTINATION 1     /* destination (address, port, protocol) not in the allowlist */
#define REASON_UNREGISTERED 2    /* task under the attach point in no agent cgroup */
#define REASON_SOCKET_KIND 3     /* raw or ICMP socket */
#define REASON_DEVICE 4          /* bound to, or leaving through, a device the rule does not name */
#define REASON_NETNS 5           /* the socket lives in another network namespace than the rule */
#define REASON_IP_OPTIONS 6      /* IPv4 options (source routes) or IPv6 extension headers */
#define REASON_SOCKOPT 7         /* a socket option that reroutes traffic (SO_BINDTODEVICE, IPV6_RTHDR, ...) */
#define REASON_INBOUND 8         /* bind to, or a packet from outside for, a port the config does not open */
#define REASON_FRAGMENT 9        /* a non-first IP fragment (no ports to judge) */

#define LOOPBACK_IFINDEX 1

#define AGENT_UNREGISTERED 0     /* agent_idx of a task under the attach point in no agent cgroup */

struct agent_info {
    u32 agent_idx;
    u8 mode;
    u8 pad[3];
};

/* settings[0]: where the agents' parent cgroup sits, so programs attached at the cgroup2
 * root (judging the calling task, whatever cgroup the socket came from) return at once
 * for tasks that are not under it */
struct settings {
    u64 parent_cgroup_id;
    u32 parent_level;
    u32 pad;
};

/* the value of an allow rule: 0 = any; user space sets ifindex 1 (lo) for loopback addresses */
struct allow_val {
    u64 netns_cookie;
    u32 ifindex;
    u32 pad;
};

struct inbound_key {
    u32 agent_idx;
    u16 port;      /* host order */
    u8 proto;
    u8 pad;
};

struct allow4_key {
    u32 agent_idx;
    u32 addr;      /* network order */
    u16 port;      /* host order */
    u8 proto;      /* IPPROTO_TCP / IPPROTO_UDP */
    u8 pad;
};

struct allow6_key {
    u32 agent_idx;
    u8 addr[16];
    u16 port;
    u8 proto;
    u8 pad;
};

struct egress_event {
    u64 seq;         /* from the pinned `seq` counter: gaps and duplicates are visible across restarts */
    u64 cgroup_id;   /* the task's own cgroup (packets: the socket's) */
    u64 agent_cgroup_id;
    u32 pid;         /* packets judged outside the sender's context carry whatever task ran */
    u32 uid;
    u32 agent_idx;
    u32 ifindex;     /* bound or egress device, when the reason is the device */
    u32 detail;      /* setsockopt: level << 16 | optname */
    u16 port;
    u8 hook;
    u8 verdict;
    u8 reason;
    u8 family;       /* 4 or 6 (as the socket sees it) */
    u8 proto;
    u8 sock_type;
    u8 addr_is_v4;   /* 1: addr holds an IPv4 address (also a v4-mapped destination) in its first 4 bytes */
    u8 pad[3];
    u8 addr[16];
    char comm[16];
};

#endif
