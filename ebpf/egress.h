/* Sealgate egress enforcement: types and constants shared by the BPF programs
 * (egress.bpf.c) and user space (ext_authz/egress.py reads the #defines and
 * bcc builds ctypes for the structs from the compiled program).
 * Keep every #define a plain integer: user space parses them. */
#ifndef SEALGATE_EGRESS_H
#define SEALGATE_EGRESS_H

#define MAX_AGENT_CGROUPS 1024   /* bounded maps */
#define MAX_ALLOW_RULES 8192
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

#define AGENT_UNREGISTERED 0     /* agent_idx of a task under the attach point in no agent cgroup */

struct agent_info {
    u32 agent_idx;
    u8 mode;
    u8 pad[3];
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
    u64 cgroup_id;   /* the task's own cgroup */
    u64 agent_cgroup_id;
    u32 pid;
    u32 uid;
    u32 agent_idx;
    u16 port;
    u8 hook;
    u8 verdict;
    u8 family;       /* 4 or 6 (as the socket sees it) */
    u8 proto;
    u8 sock_type;
    u8 addr_is_v4;   /* 1: addr holds an IPv4 address (also a v4-mapped destination) in its first 4 bytes */
    u8 addr[16];
    char comm[16];
};

#endif
