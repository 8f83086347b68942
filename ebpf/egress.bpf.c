/* Sealgate egress enforcement: cgroup programs (bcc).
 *
 * Two attach points, both with BPF_F_ALLOW_MULTI:
 *  - the cgroup2 root: connect4/6, sendmsg4/6, bind4/6, setsockopt. The kernel runs
 *    these for every socket; they judge the *calling task* (its nearest registered
 *    agent cgroup), so a socket the agent did not create (pidfd_getfd, ptrace,
 *    SCM_RIGHTS, inheritance) is judged like its own. Tasks not under the agents'
 *    parent cgroup return at once.
 *  - the agents' parent cgroup: sock_create (raw and ping sockets) and the packet
 *    checks cgroup_skb egress/ingress, which judge each packet of an agent socket by
 *    its real destination (after source routes, options, device binding, cmsgs) and
 *    device, and refuse inbound packets from outside the allowlist.
 * A task under the parent in no agent cgroup is denied (fail closed). Every refusal
 * (and, in audit mode, every would-be refusal) goes to a pinned ring buffer with a
 * sequence number; a full ring buffer increments the pinned `drops` counter. */
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/net.h>
#include <linux/socket.h>
#include "egress.h"

#ifndef PIN_DIR
#error "PIN_DIR must be defined (bpffs directory for the pinned maps)"
#endif

BPF_TABLE_PINNED("hash", u64, struct agent_info, agents, MAX_AGENT_CGROUPS, PIN_DIR "/agents");
BPF_TABLE_PINNED("hash", struct allow4_key, struct allow_val, allow4, MAX_ALLOW_RULES, PIN_DIR "/allow4");
BPF_TABLE_PINNED("hash", struct allow6_key, struct allow_val, allow6, MAX_ALLOW_RULES, PIN_DIR "/allow6");
BPF_TABLE_PINNED("hash", struct inbound_key, u8, inbound, MAX_INBOUND_RULES, PIN_DIR "/inbound");
BPF_TABLE_PINNED("array", u32, struct settings, settings, 1, PIN_DIR "/settings");
BPF_TABLE_PINNED("array", u32, u64, drops, 1, PIN_DIR "/drops");
BPF_TABLE_PINNED("array", u32, u64, seq, 1, PIN_DIR "/seq");
/* written by user space only: the drop count it last reported, so a restarted daemon reports the rest */
BPF_TABLE_PINNED("array", u32, u64, reported, 1, PIN_DIR "/reported");
/* bcc's BPF_RINGBUF_OUTPUT, pinned: events written while no daemon reads wait for the next one */
struct events_table_t {
    int key;
    u32 leaf;
    int (*ringbuf_output)(void *, u64, u64);
    void *(*ringbuf_reserve)(u64);
    void (*ringbuf_discard)(void *, u64);
    void (*ringbuf_submit)(void *, u64);
    u32 max_entries;
};
__attribute__((section("maps/ringbuf:" PIN_DIR "/events"))) struct events_table_t events = {
    .max_entries = RINGBUF_PAGES * PAGE_SIZE};

static __always_inline struct agent_info *lookup_agent(u64 id, u64 *agent_cgroup)
{
    struct agent_info *info = agents.lookup(&id);
    if (info)
        *agent_cgroup = id;
    return info;
}

/* The calling task: 0 if it is not under the agents' parent cgroup (not ours to judge). */
static __always_inline int task_under_parent(void)
{
    u32 zero = 0;
    struct settings *s = settings.lookup(&zero);
    if (!s || !s->parent_cgroup_id)
        return 0;
    return bpf_get_current_ancestor_cgroup_id(s->parent_level) == s->parent_cgroup_id;
}

static __always_inline struct agent_info *nearest_agent(u64 *agent_cgroup)
{
    /* common case first: the task sits directly in its agent cgroup */
    struct agent_info *direct = lookup_agent(bpf_get_current_cgroup_id(), agent_cgroup);
    if (direct)
        return direct;
#pragma unroll
    for (int level = MAX_CGROUP_DEPTH; level >= 0; level--) {
        u64 id = bpf_get_current_ancestor_cgroup_id(level);
        if (id == 0)
            continue;
        struct agent_info *info = lookup_agent(id, agent_cgroup);
        if (info)
            return info;
    }
    return 0;
}

/* The socket's cgroup (packet programs run outside the sender's context). */
static __always_inline struct agent_info *skb_agent(struct __sk_buff *skb, u64 *agent_cgroup)
{
    struct agent_info *direct = lookup_agent(bpf_skb_cgroup_id(skb), agent_cgroup);
    if (direct)
        return direct;
#pragma unroll
    for (int level = MAX_CGROUP_DEPTH; level >= 0; level--) {
        u64 id = bpf_skb_ancestor_cgroup_id(skb, level);
        if (id == 0)
            continue;
        struct agent_info *info = lookup_agent(id, agent_cgroup);
        if (info)
            return info;
    }
    return 0;
}

struct verdict_ctx {
    u8 hook;
    u8 reason;
    u8 family;
    u8 proto;
    u8 sock_type;
    u16 port;
    u32 ifindex;
    u32 detail;
    u64 cgroup_id;
};

/* task_ctx: 1 when the program runs in the calling task (its pid, uid, comm are meaningful) */
static __always_inline void report(struct verdict_ctx *v, u8 verdict, u32 agent_idx, u64 agent_cgroup,
                                   const u8 *addr, u32 addr_len, const int task_ctx)
{
    u32 zero = 0;
    struct egress_event *e = events.ringbuf_reserve(sizeof(struct egress_event));
    if (!e) {
        u64 *n = drops.lookup(&zero);
        if (n)
            __sync_fetch_and_add(n, 1);
        return;
    }
    __builtin_memset(e, 0, sizeof(*e));
    u64 *counter = seq.lookup(&zero);
    if (counter)
        e->seq = __sync_fetch_and_add(counter, 1);
    e->agent_cgroup_id = agent_cgroup;
    if (task_ctx) {
        e->cgroup_id = bpf_get_current_cgroup_id();
        e->pid = bpf_get_current_pid_tgid() >> 32;
        e->uid = (u32)bpf_get_current_uid_gid();
        bpf_get_current_comm(e->comm, sizeof(e->comm));
    } else {
        e->cgroup_id = v->cgroup_id;
    }
    e->agent_idx = agent_idx;
    e->ifindex = v->ifindex;
    e->detail = v->detail;
    e->port = v->port;
    e->hook = v->hook;
    e->verdict = verdict;
    e->reason = v->reason;
    e->family = v->family;
    e->proto = v->proto;
    e->sock_type = v->sock_type;
    if (addr_len == 4)
        __builtin_memcpy(e->addr, addr, 4);
    else if (addr_len == 16)
        __builtin_memcpy(e->addr, addr, 16);
    e->addr_is_v4 = addr_len == 4;
    events.ringbuf_submit(e, 0);
}

/* 1 = let it through, 0 = refuse; reports unless allowed */
static __always_inline int decide(struct verdict_ctx *v, struct agent_info *agent, u64 agent_cgroup,
                                  const u8 *addr, u32 addr_len, const int task_ctx)
{
    if (!agent) {
        v->reason = REASON_UNREGISTERED;
        report(v, VERDICT_BLOCKED, AGENT_UNREGISTERED, 0, addr, addr_len, task_ctx);
        return 0;
    }
    u8 audit = agent->mode == MODE_AUDIT;
    report(v, audit ? VERDICT_AUDITED : VERDICT_BLOCKED, agent->agent_idx, agent_cgroup, addr, addr_len, task_ctx);
    return audit;
}

/* does the rule's device and network namespace hold for this socket? sets v->reason if not */
static __always_inline int rule_holds(struct verdict_ctx *v, struct allow_val *rule, struct bpf_sock_addr *ctx)
{
    struct bpf_sock *sk = ctx->sk;
    u32 bound = sk ? sk->bound_dev_if : 0;
    if (bound && bound != rule->ifindex) {
        v->reason = REASON_DEVICE;
        v->ifindex = bound;
        return 0;
    }
    if (rule->netns_cookie && bpf_get_netns_cookie(ctx) != rule->netns_cookie) {
        v->reason = REASON_NETNS;
        return 0;
    }
    return 1;
}

static __always_inline int sock_addr_v4(u8 hook, u8 family, struct bpf_sock_addr *ctx, u32 addr)
{
    if (!task_under_parent())
        return 1;
    u64 agent_cgroup = 0;
    struct verdict_ctx v = {.hook = hook, .reason = REASON_DESTINATION, .family = family,
                            .proto = (u8)ctx->protocol, .sock_type = (u8)ctx->type,
                            .port = bpf_ntohs((u16)ctx->user_port)};
    struct agent_info *agent = nearest_agent(&agent_cgroup);
    if (agent) {
        struct allow4_key key = {};
        key.agent_idx = agent->agent_idx;
        key.addr = addr;
        key.port = v.port;
        key.proto = v.proto;
        struct allow_val *rule = allow4.lookup(&key);
        if (rule && rule_holds(&v, rule, ctx))
            return 1;
    }
    return decide(&v, agent, agent_cgroup, (u8 *)&addr, 4, 1);
}

static __always_inline int sock_addr_v6(u8 hook, struct bpf_sock_addr *ctx)
{
    u32 a[4];
    a[0] = ctx->user_ip6[0];
    a[1] = ctx->user_ip6[1];
    a[2] = ctx->user_ip6[2];
    a[3] = ctx->user_ip6[3];
    /* ::ffff:a.b.c.d is IPv4 on a dual-stack socket: judge it by the v4 allowlist */
    if (a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0x0000ffff))
        return sock_addr_v4(hook, 6, ctx, a[3]);
    if (!task_under_parent())
        return 1;
    u64 agent_cgroup = 0;
    struct verdict_ctx v = {.hook = hook, .reason = REASON_DESTINATION, .family = 6,
                            .proto = (u8)ctx->protocol, .sock_type = (u8)ctx->type,
                            .port = bpf_ntohs((u16)ctx->user_port)};
    struct agent_info *agent = nearest_agent(&agent_cgroup);
    if (agent) {
        struct allow6_key key = {};
        key.agent_idx = agent->agent_idx;
        __builtin_memcpy(key.addr, a, 16);
        key.port = v.port;
        key.proto = v.proto;
        struct allow_val *rule = allow6.lookup(&key);
        if (rule && rule_holds(&v, rule, ctx))
            return 1;
    }
    return decide(&v, agent, agent_cgroup, (u8 *)a, 16, 1);
}

int sg_connect4(struct bpf_sock_addr *ctx) { return sock_addr_v4(HOOK_CONNECT4, 4, ctx, ctx->user_ip4); }
int sg_sendmsg4(struct bpf_sock_addr *ctx) { return sock_addr_v4(HOOK_SENDMSG4, 4, ctx, ctx->user_ip4); }
int sg_connect6(struct bpf_sock_addr *ctx) { return sock_addr_v6(HOOK_CONNECT6, ctx); }
int sg_sendmsg6(struct bpf_sock_addr *ctx) { return sock_addr_v6(HOOK_SENDMSG6, ctx); }

/* bind: only to port 0 (the kernel picks) or to a port the config opens for inbound */
static __always_inline int bind_check(u8 hook, u8 family, struct bpf_sock_addr *ctx, const u8 *addr, u32 addr_len)
{
    if (!task_under_parent())
        return 1;
    u64 agent_cgroup = 0;
    struct verdict_ctx v = {.hook = hook, .reason = REASON_INBOUND, .family = family,
                            .proto = (u8)ctx->protocol, .sock_type = (u8)ctx->type,
                            .port = bpf_ntohs((u16)ctx->user_port)};
    struct agent_info *agent = nearest_agent(&agent_cgroup);
    if (agent) {
        if (v.port == 0)
            return 1;
        struct inbound_key key = {};
        key.agent_idx = agent->agent_idx;
        key.port = v.port;
        key.proto = v.proto;
        if (inbound.lookup(&key))
            return 1;
    }
    return decide(&v, agent, agent_cgroup, addr, addr_len, 1);
}

int sg_bind4(struct bpf_sock_addr *ctx)
{
    u32 addr = ctx->user_ip4;
    return bind_check(HOOK_BIND4, 4, ctx, (u8 *)&addr, 4);
}

int sg_bind6(struct bpf_sock_addr *ctx)
{
    u32 a[4];
    a[0] = ctx->user_ip6[0];
    a[1] = ctx->user_ip6[1];
    a[2] = ctx->user_ip6[2];
    a[3] = ctx->user_ip6[3];
    return bind_check(HOOK_BIND6, 6, ctx, (u8 *)a, 16);
}

/* Options that send traffic somewhere else than the address the connect/sendmsg hooks judge. */
static __always_inline int rerouting_option(int level, int optname)
{
    if (level == SOL_SOCKET)
        return optname == 25 /* SO_BINDTODEVICE */ || optname == 62 /* SO_BINDTOIFINDEX */ || optname == 36 /* SO_MARK */;
    if (level == 0 /* SOL_IP */)
        return optname == 4 /* IP_OPTIONS */ || optname == 50 /* IP_UNICAST_IF */ || optname == 32 /* IP_MULTICAST_IF */
               || optname == 19 /* IP_TRANSPARENT */;
    if (level == 41 /* SOL_IPV6 */)
        return optname == 57 /* IPV6_RTHDR */ || optname == 54 /* IPV6_HOPOPTS */ || optname == 55 /* IPV6_RTHDRDSTOPTS */
               || optname == 59 /* IPV6_DSTOPTS */ || optname == 6 /* IPV6_2292PKTOPTIONS */ || optname == 50 /* IPV6_PKTINFO */
               || optname == 76 /* IPV6_UNICAST_IF */ || optname == 17 /* IPV6_MULTICAST_IF */ || optname == 75 /* IPV6_TRANSPARENT */;
    return 0;
}

int sg_setsockopt(struct bpf_sockopt *ctx)
{
    /* this runs for every setsockopt on the machine: an optval over a page is the kernel's to use
     * unchanged (optlen 0), or kernels before 6.5 fail the call with EFAULT */
    if (ctx->optlen > PAGE_SIZE)
        ctx->optlen = 0;
    if (!task_under_parent())
        return 1;
    int level = ctx->level, optname = ctx->optname;
    if (!rerouting_option(level, optname))
        return 1;
    u64 agent_cgroup = 0;
    struct bpf_sock *sk = ctx->sk;
    struct verdict_ctx v = {.hook = HOOK_SETSOCKOPT, .reason = REASON_SOCKOPT,
                            .detail = ((u32)level << 16) | ((u32)optname & 0xffff)};
    if (sk) {
        v.family = sk->family == 10 ? 6 : 4;
        v.proto = (u8)sk->protocol;
        v.sock_type = (u8)sk->type;
    }
    struct agent_info *agent = nearest_agent(&agent_cgroup);
    return decide(&v, agent, agent_cgroup, 0, 0, 1);
}

/* Raw sockets and ICMP "ping" sockets carry traffic no sock_addr hook sees. */
int sg_sock_create(struct bpf_sock *sk)
{
    u8 raw = sk->type == SOCK_RAW;
    u8 ping = sk->type == SOCK_DGRAM && (sk->protocol == IPPROTO_ICMP || sk->protocol == IPPROTO_ICMPV6);
    if (!raw && !ping)
        return 1;
    u64 agent_cgroup = 0;
    struct verdict_ctx v = {.hook = HOOK_SOCK_CREATE, .reason = REASON_SOCKET_KIND, .family = sk->family == 10 ? 6 : 4,
                            .proto = (u8)sk->protocol, .sock_type = (u8)sk->type};
    struct agent_info *agent = nearest_agent(&agent_cgroup);
    return decide(&v, agent, agent_cgroup, 0, 0, 1);
}

/* ---- packet checks (attached at the parent: packets of sockets created in agent cgroups) ---- */

struct pkt {
    u8 family;
    u8 proto;
    u8 reason;  /* nonzero: refuse whatever the allowlist says */
    u16 sport;
    u16 dport;
    u32 saddr[4];
    u32 daddr[4];
};

static __always_inline int parse(struct __sk_buff *skb, struct pkt *p)
{
    u16 ports[2] = {};
    if (skb->protocol == bpf_htons(ETH_P_IP)) {
        u8 hdr[20];
        if (bpf_skb_load_bytes(skb, 0, hdr, sizeof(hdr)) < 0)
            return -1;
        u8 ihl = hdr[0] & 0x0f;
        p->family = 4;
        p->proto = hdr[9];
        __builtin_memcpy(&p->saddr[0], &hdr[12], 4);
        __builtin_memcpy(&p->daddr[0], &hdr[16], 4);
        if (ihl != 5) {  /* options: LSRR/SSRR/record route ... */
            p->reason = REASON_IP_OPTIONS;
            return 0;
        }
        if ((hdr[6] & 0x1f) || hdr[7]) {  /* fragment offset != 0: no ports here */
            p->reason = REASON_FRAGMENT;
            return 0;
        }
        if (p->proto == IPPROTO_TCP || p->proto == IPPROTO_UDP) {
            if (bpf_skb_load_bytes(skb, 20, ports, sizeof(ports)) < 0)
                return -1;
        }
    } else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
        u8 hdr[40];
        if (bpf_skb_load_bytes(skb, 0, hdr, sizeof(hdr)) < 0)
            return -1;
        p->family = 6;
        p->proto = hdr[6];
        __builtin_memcpy(p->saddr, &hdr[8], 16);
        __builtin_memcpy(p->daddr, &hdr[24], 16);
        if (p->proto == IPPROTO_TCP || p->proto == IPPROTO_UDP) {
            if (bpf_skb_load_bytes(skb, 40, ports, sizeof(ports)) < 0)
                return -1;
        } else if (p->proto == 0 || p->proto == 43 || p->proto == 60 || p->proto == 44) {
            /* hop-by-hop, routing (SRH), destination options, fragment: refuse */
            p->reason = REASON_IP_OPTIONS;
            return 0;
        }
    } else {
        return -1;
    }
    p->sport = bpf_ntohs(ports[0]);
    p->dport = bpf_ntohs(ports[1]);
    return 0;
}

/* the allow rule for (addr, port, proto) of this agent, or 0 */
static __always_inline struct allow_val *rule_for(struct pkt *p, u32 agent_idx, u32 *addr, u16 port)
{
    if (p->family == 4) {
        struct allow4_key k4 = {};
        k4.agent_idx = agent_idx;
        k4.addr = addr[0];
        k4.port = port;
        k4.proto = p->proto;
        return allow4.lookup(&k4);
    }
    struct allow6_key k6 = {};
    k6.agent_idx = agent_idx;
    __builtin_memcpy(k6.addr, addr, 16);
    k6.port = port;
    k6.proto = p->proto;
    /* v4-mapped on the wire does not happen: a dual-stack socket sends IPv4 packets */
    return allow6.lookup(&k6);
}

static __always_inline int inbound_open(struct pkt *p, u32 agent_idx, u16 port)
{
    struct inbound_key k = {};
    k.agent_idx = agent_idx;
    k.port = port;
    k.proto = p->proto;
    return inbound.lookup(&k) != 0;
}

static __always_inline int skb_check(struct __sk_buff *skb, u8 egress)
{
    struct pkt p = {};
    if (parse(skb, &p) < 0)
        return 1;  /* not IP: ARP and friends never carry a socket's payload */
    u64 agent_cgroup = 0;
    struct agent_info *agent = skb_agent(skb, &agent_cgroup);
    struct verdict_ctx v = {.hook = egress ? HOOK_SKB_EGRESS : HOOK_SKB_INGRESS,
                            .reason = p.reason ? p.reason : (egress ? REASON_DESTINATION : REASON_INBOUND),
                            .family = p.family, .proto = p.proto, .port = egress ? p.dport : p.sport,
                            .ifindex = skb->ifindex, .cgroup_id = bpf_skb_cgroup_id(skb)};
    u32 *peer = egress ? p.daddr : p.saddr;
    if (agent && agent->mode == MODE_AUDIT)
        return 1;  /* audit mode reports at the connect/sendmsg/bind hooks, not per packet */
    if (agent && !p.reason) {
        u16 local = egress ? p.sport : p.dport;
        u16 remote = egress ? p.dport : p.sport;
        struct allow_val *rule = rule_for(&p, agent->agent_idx, peer, remote);
        if (rule) {
            if (!rule->ifindex || rule->ifindex == skb->ifindex)
                return 1;
            v.reason = REASON_DEVICE;
        } else if (inbound_open(&p, agent->agent_idx, local)) {
            return 1;  /* a connection or datagram on a port the config opens */
        }
    }
    return decide(&v, agent, agent_cgroup, (u8 *)peer, p.family == 4 ? 4 : 16, 0);
}

int sg_skb_egress(struct __sk_buff *skb) { return skb_check(skb, 1); }
int sg_skb_ingress(struct __sk_buff *skb) { return skb_check(skb, 0); }
