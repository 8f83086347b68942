/* Sealgate egress enforcement: cgroup sock_addr + sock_create programs (bcc).
 *
 * Attached with BPF_F_ALLOW_MULTI at the parent of all agent cgroups. For the
 * current task the nearest ancestor cgroup registered as an agent decides, so a
 * child cgroup cannot escape; a task under the attach point in no agent cgroup
 * is denied (fail closed). Allowed destinations (the mesh proxy, the resolver)
 * live in maps that user space changes at runtime. Every refusal (and, in audit
 * mode, every would-be refusal) is sent through a ring buffer; a full ring
 * buffer increments `drops`, which user space reports. */
#include <uapi/linux/bpf.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/net.h>
#include <linux/socket.h>
#include "egress.h"

#ifndef PIN_DIR
#error "PIN_DIR must be defined (bpffs directory for the pinned maps)"
#endif

BPF_TABLE_PINNED("hash", u64, struct agent_info, agents, MAX_AGENT_CGROUPS, PIN_DIR "/agents");
BPF_TABLE_PINNED("hash", struct allow4_key, u8, allow4, MAX_ALLOW_RULES, PIN_DIR "/allow4");
BPF_TABLE_PINNED("hash", struct allow6_key, u8, allow6, MAX_ALLOW_RULES, PIN_DIR "/allow6");
BPF_TABLE_PINNED("array", u32, u64, drops, 1, PIN_DIR "/drops");
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);

static __always_inline struct agent_info *nearest_agent(u64 *agent_cgroup)
{
    /* common case first: the task sits directly in its agent cgroup */
    u64 own = bpf_get_current_cgroup_id();
    struct agent_info *direct = agents.lookup(&own);
    if (direct) {
        *agent_cgroup = own;
        return direct;
    }
#pragma unroll
    for (int level = MAX_CGROUP_DEPTH; level >= 0; level--) {
        u64 id = bpf_get_current_ancestor_cgroup_id(level);
        if (id == 0)
            continue;
        struct agent_info *info = agents.lookup(&id);
        if (info) {
            *agent_cgroup = id;
            return info;
        }
    }
    return 0;
}

static __always_inline void report(u8 hook, u8 verdict, u32 agent_idx, u64 agent_cgroup, u8 family, u8 proto,
                                   u8 sock_type, const u8 *addr, u32 addr_len, u16 port)
{
    struct egress_event *e = events.ringbuf_reserve(sizeof(struct egress_event));
    if (!e) {
        u32 zero = 0;
        u64 *n = drops.lookup(&zero);
        if (n)
            __sync_fetch_and_add(n, 1);
        return;
    }
    __builtin_memset(e, 0, sizeof(*e));
    e->cgroup_id = bpf_get_current_cgroup_id();
    e->agent_cgroup_id = agent_cgroup;
    e->pid = bpf_get_current_pid_tgid() >> 32;
    e->uid = (u32)bpf_get_current_uid_gid();
    e->agent_idx = agent_idx;
    e->port = port;
    e->hook = hook;
    e->verdict = verdict;
    e->family = family;
    e->proto = proto;
    e->sock_type = sock_type;
    if (addr_len > 16)
        addr_len = 16;
    if (addr_len)
        bpf_probe_read_kernel(e->addr, addr_len, addr);
    e->addr_is_v4 = addr_len == 4;
    bpf_get_current_comm(e->comm, sizeof(e->comm));
    events.ringbuf_submit(e, 0);
}

/* 1 = let the syscall proceed, 0 = EPERM */
static __always_inline int verdict_v4(u8 hook, u8 family, struct bpf_sock_addr *ctx, u32 addr)
{
    u64 agent_cgroup = 0;
    u16 port = bpf_ntohs((u16)ctx->user_port);
    u8 proto = (u8)ctx->protocol;
    struct agent_info *agent = nearest_agent(&agent_cgroup);
    if (!agent) {
        report(hook, VERDICT_BLOCKED, AGENT_UNREGISTERED, 0, family, proto, (u8)ctx->type, (u8 *)&addr, 4, port);
        return 0;
    }
    struct allow4_key key = {};
    key.agent_idx = agent->agent_idx;
    key.addr = addr;
    key.port = port;
    key.proto = proto;
    if (allow4.lookup(&key))
        return 1;
    u8 audit = agent->mode == MODE_AUDIT;
    report(hook, audit ? VERDICT_AUDITED : VERDICT_BLOCKED, agent->agent_idx, agent_cgroup, family, proto,
           (u8)ctx->type, (u8 *)&addr, 4, port);
    return audit;
}

static __always_inline int verdict_v6(u8 hook, struct bpf_sock_addr *ctx)
{
    u32 a[4];
    a[0] = ctx->user_ip6[0];
    a[1] = ctx->user_ip6[1];
    a[2] = ctx->user_ip6[2];
    a[3] = ctx->user_ip6[3];
    /* ::ffff:a.b.c.d is IPv4 on a dual-stack socket: judge it by the v4 allowlist */
    if (a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0x0000ffff))
        return verdict_v4(hook, 6, ctx, a[3]);

    u64 agent_cgroup = 0;
    u16 port = bpf_ntohs((u16)ctx->user_port);
    u8 proto = (u8)ctx->protocol;
    struct agent_info *agent = nearest_agent(&agent_cgroup);
    if (!agent) {
        report(hook, VERDICT_BLOCKED, AGENT_UNREGISTERED, 0, 6, proto, (u8)ctx->type, (u8 *)a, 16, port);
        return 0;
    }
    struct allow6_key key = {};
    key.agent_idx = agent->agent_idx;
    __builtin_memcpy(key.addr, a, 16);
    key.port = port;
    key.proto = proto;
    if (allow6.lookup(&key))
        return 1;
    u8 audit = agent->mode == MODE_AUDIT;
    report(hook, audit ? VERDICT_AUDITED : VERDICT_BLOCKED, agent->agent_idx, agent_cgroup, 6, proto,
           (u8)ctx->type, (u8 *)a, 16, port);
    return audit;
}

int sg_connect4(struct bpf_sock_addr *ctx) { return verdict_v4(HOOK_CONNECT4, 4, ctx, ctx->user_ip4); }
int sg_sendmsg4(struct bpf_sock_addr *ctx) { return verdict_v4(HOOK_SENDMSG4, 4, ctx, ctx->user_ip4); }
int sg_connect6(struct bpf_sock_addr *ctx) { return verdict_v6(HOOK_CONNECT6, ctx); }
int sg_sendmsg6(struct bpf_sock_addr *ctx) { return verdict_v6(HOOK_SENDMSG6, ctx); }

/* Raw sockets and ICMP "ping" sockets carry traffic no sock_addr hook sees. */
int sg_sock_create(struct bpf_sock *sk)
{
    u8 raw = sk->type == SOCK_RAW;
    u8 ping = sk->type == SOCK_DGRAM && (sk->protocol == IPPROTO_ICMP || sk->protocol == IPPROTO_ICMPV6);
    if (!raw && !ping)
        return 1;
    u64 agent_cgroup = 0;
    struct agent_info *agent = nearest_agent(&agent_cgroup);
    u32 idx = agent ? agent->agent_idx : AGENT_UNREGISTERED;
    u8 audit = agent && agent->mode == MODE_AUDIT;
    report(HOOK_SOCK_CREATE, audit ? VERDICT_AUDITED : VERDICT_BLOCKED, idx, agent_cgroup,
           sk->family == 10 ? 6 : 4, (u8)sk->protocol, (u8)sk->type, 0, 0, 0);
    return audit;
}
