"""Pure parts of the egress module: config, OCSF mapping, header constants, probe reasons."""

import ctypes
import ipaddress
import socket
import struct

import pytest

from ext_authz.egress import kernel as egress_kernel
from ext_authz.egress.config import AgentEgress, EgressConfig
from ext_authz.egress.events import ocsf_event
from ext_authz.egress.kernel import HOOKS, C, bpffs_mounted, cgroup2_mount, probe
from ext_authz.errors import ConfigError


class Event(ctypes.Structure):  # mirrors struct egress_event in ebpf/egress.h
    _fields_ = [("seq", ctypes.c_uint64), ("cgroup_id", ctypes.c_uint64), ("agent_cgroup_id", ctypes.c_uint64),
                ("pid", ctypes.c_uint32), ("uid", ctypes.c_uint32), ("agent_idx", ctypes.c_uint32),
                ("ifindex", ctypes.c_uint32), ("detail", ctypes.c_uint32), ("port", ctypes.c_uint16),
                ("hook", ctypes.c_uint8), ("verdict", ctypes.c_uint8), ("reason", ctypes.c_uint8), ("family", ctypes.c_uint8),
                ("proto", ctypes.c_uint8), ("sock_type", ctypes.c_uint8), ("addr_is_v4", ctypes.c_uint8),
                ("pad", ctypes.c_uint8 * 3), ("addr", ctypes.c_uint8 * 16), ("comm", ctypes.c_char * 16)]


def event(hook, addr: bytes, family, verdict=None, proto=socket.IPPROTO_TCP, agent_idx=7, reason=None, detail=0):
    e = Event(seq=3, cgroup_id=11, agent_cgroup_id=10, pid=42, uid=1000, agent_idx=agent_idx, port=8080, hook=hook,
              verdict=verdict or C["VERDICT_BLOCKED"], reason=reason or C["REASON_DESTINATION"], family=family,
              proto=proto, sock_type=1, addr_is_v4=int(len(addr) == 4), comm=b"curl", detail=detail)
    ctypes.memmove(e.addr, addr, len(addr))
    return e


def test_header_constants_are_parsed():
    assert C["MODE_AUDIT"] == 1 and C["HOOK_SOCK_CREATE"] == 5 and C["AGENT_UNREGISTERED"] == 0
    assert set(HOOKS.values()) == {"connect4", "connect6", "sendmsg4", "sendmsg6", "sock_create", "skb_egress",
                                   "skb_ingress", "bind4", "bind6", "setsockopt"}


def test_event_struct_mirror_has_the_size_of_the_header_struct():
    header = egress_kernel.HEADER.read_text()
    assert "u8 pad[3];" in header and ctypes.sizeof(Event) == 88  # no implicit padding on either side


def test_every_kernel_reason_has_a_stable_code_with_a_message():
    from ext_authz import reasons
    from ext_authz.egress.events import REASONS

    numbers = {v for k, v in C.items() if k.startswith("REASON_")}
    assert set(REASONS) == numbers
    assert all(code.startswith("EGRESS_") and code in reasons.MESSAGES for code in REASONS.values())


def test_setsockopt_event_names_the_option_and_no_address():
    doc = ocsf_event(event(C["HOOK_SETSOCKOPT"], b"", 6, reason=C["REASON_SOCKOPT"], detail=(41 << 16) | 57), {7: "w"})
    assert doc["unmapped"]["sockopt"] == [41, 57] and doc["dst_endpoint"]["ip"] is None
    assert doc["unmapped"]["reason_code"] == "EGRESS_SOCKOPT_REROUTES"


def test_inbound_refusal_is_an_inbound_event():
    doc = ocsf_event(event(C["HOOK_SKB_INGRESS"], bytes([10, 0, 0, 2]), 4, reason=C["REASON_INBOUND"]), {})
    assert doc["connection_info"]["direction_id"] == 1 and doc["unmapped"]["reason_code"] == "EGRESS_INBOUND_NOT_ALLOWED"


def test_loss_record_carries_the_range_of_lost_events():
    from ext_authz.egress.events import loss_event

    doc = loss_event(10, 25, now_ms=1)
    assert (doc["dropped_events"], doc["dropped_from"], doc["dropped_total"]) == (15, 10, 25)


def test_blocked_v4_connect_maps_to_ocsf_refuse():
    doc = ocsf_event(event(C["HOOK_CONNECT4"], bytes([10, 0, 0, 2]), 4), {7: "worker"}, now_ms=5)
    assert (doc["class_uid"], doc["activity_id"], doc["type_uid"], doc["disposition_id"]) == (4001, 5, 400105, 2)
    assert doc["dst_endpoint"] == {"ip": "10.0.0.2", "port": 8080}
    assert doc["actor"]["process"] == {"pid": 42, "name": "curl", "user": {"uid": "1000"}}
    assert doc["unmapped"]["agent_id"] == "worker" and doc["unmapped"]["hook"] == "connect4"
    assert doc["connection_info"]["protocol_name"] == "tcp" and doc["time"] == 5


def test_v6_and_v4_mapped_addresses():
    v6 = ipaddress.IPv6Address("fd00::2").packed
    assert ocsf_event(event(C["HOOK_CONNECT6"], v6, 6), {})["dst_endpoint"]["ip"] == "fd00::2"
    # an IPv6 address whose last 12 bytes are zero is still IPv6
    sparse = ipaddress.IPv6Address("fd00::").packed
    assert ocsf_event(event(C["HOOK_CONNECT6"], sparse, 6), {})["dst_endpoint"]["ip"] == "fd00::"
    # a v4-mapped destination is judged (and reported) by its IPv4 address
    mapped = ocsf_event(event(C["HOOK_CONNECT6"], bytes([10, 0, 0, 2]), 6), {})
    assert mapped["dst_endpoint"]["ip"] == "10.0.0.2" and mapped["connection_info"]["protocol_ver_id"] == 6


def test_audit_and_unregistered_and_sock_create():
    audited = ocsf_event(event(C["HOOK_SENDMSG4"], bytes(4), 4, verdict=C["VERDICT_AUDITED"]), {7: "a"})
    assert (audited["activity_id"], audited["disposition_id"], audited["action_id"]) == (1, 1, 1)
    stray = ocsf_event(event(C["HOOK_CONNECT4"], bytes([1, 2, 3, 4]), 4, agent_idx=0), {})
    assert stray["unmapped"]["agent_id"] == "unregistered"
    raw = ocsf_event(event(C["HOOK_SOCK_CREATE"], bytes(16), 4, proto=socket.IPPROTO_ICMP), {})
    assert raw["dst_endpoint"]["ip"] is None and raw["connection_info"]["protocol_name"] == "icmp"


@pytest.mark.parametrize("raw,needle", [
    ({"agents": [{"id": "Bad Name"}]}, "agent id"),
    ({"agents": [{"id": "a", "mode": "permissive"}]}, "mode"),
    ({"agents": [{"id": "a", "allow": [{"addr": "not-an-ip", "port": 1}]}]}, "allow rule"),
    ({"agents": [{"id": "a", "allow": [{"addr": "10.0.0.1", "port": 0}]}]}, "port"),
    ({"agents": [{"id": "a", "allow": [{"addr": "10.0.0.1", "port": 53, "proto": "sctp"}]}]}, "proto"),
    ({"agents": [{"mode": "audit"}]}, "needs id"),
    ({"agentz": []}, "unknown keys"),
    ({"agents": [{"id": "a", "allow": [{"addr": "127.0.0.1", "port": 1, "device": "eth0"}]}]}, "loopback"),
    ({"agents": [{"id": "a", "allow": [{"addr": "10.0.0.1", "port": 1, "device": "bad name!"}]}]}, "device"),
    ({"agents": [{"id": "a", "allow": [{"addr": "10.0.0.1", "port": 1, "netns": "relative"}]}]}, "netns"),
    ({"agents": [{"id": "a", "allow": [{"addr": "10.0.0.1", "port": 1}, {"addr": "10.0.0.1", "port": 1, "device": "x"}]}]},
     "two allow rules"),
    ({"agents": [{"id": "a", "inbound": [{"port": 70000}]}]}, "inbound rule"),
    ({"agents": [{"id": "a", "inbound": [{"port": 80, "proto": "icmp"}]}]}, "proto"),
])
def test_invalid_egress_config_is_rejected(raw, needle):
    with pytest.raises(ConfigError) as err:
        EgressConfig.from_dict(raw)
    assert needle in str(err.value)


def test_agent_index_is_stable_and_nonzero():
    a = AgentEgress(id="procurement-01")
    assert a.index == AgentEgress(id="procurement-01").index != 0


def test_cgroup2_and_bpffs_found_from_mounts():
    mounts = "cgroup /sys/fs/cgroup/cpu cgroup rw 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\nbpf /sys/fs/bpf bpf rw 0 0\n"
    assert str(cgroup2_mount(mounts)) == "/sys/fs/cgroup/unified"
    assert bpffs_mounted(mounts)
    assert cgroup2_mount("cgroup /sys/fs/cgroup/cpu cgroup rw 0 0\n") is None
    assert not bpffs_mounted("")


def test_probe_names_not_root(monkeypatch):
    monkeypatch.setattr(egress_kernel.os, "geteuid", lambda: 1000)
    assert probe().startswith("not root")


# ---- BTF offsets (a hand-built blob: the layout rules, not this kernel's numbers)


def _btf(types: list[bytes], strings: bytes) -> bytes:
    body = b"".join(types)
    return struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(body), len(body), len(strings)) + body + strings


def test_btf_offsets_walk_embedded_and_anonymous_members():
    from ext_authz.egress.btf import FieldOffsets

    strings = b"\0int\0inner\0x\0y\0outer\0a\0in\0flag\0bpf_lsm_socket_sendmsg\0"
    off = {name: strings.index(name.encode() + b"\0") for name in
           ("int", "inner", "x", "y", "outer", "a", "in", "flag", "bpf_lsm_socket_sendmsg")}
    t_int = struct.pack("<III", off["int"], 1 << 24, 4) + struct.pack("<I", 32)            # [1] int
    t_anon = struct.pack("<III", 0, (5 << 24) | 2, 8) + struct.pack("<III", off["x"], 1, 0) \
        + struct.pack("<III", off["y"], 1, 32)                                               # [2] anon union
    t_inner = struct.pack("<III", off["inner"], (4 << 24) | 2, 12) + struct.pack("<III", 0, 2, 0) \
        + struct.pack("<III", off["a"], 1, 64)                                               # [3] struct inner
    t_outer = struct.pack("<III", off["outer"], (1 << 31) | (4 << 24) | 2, 20) \
        + struct.pack("<III", off["in"], 3, 32) + struct.pack("<III", off["flag"], 1, (1 << 24) | 130)  # [4] kflag
    t_func = struct.pack("<III", off["bpf_lsm_socket_sendmsg"], 12 << 24, 0)                 # [5] FUNC
    btf = FieldOffsets.parse(_btf([t_int, t_anon, t_inner, t_outer, t_func], strings))
    assert btf.offset("inner", "y") == 4  # through the anonymous union
    assert btf.offset("outer", "in.a") == 4 + 8
    assert btf.offset("outer", "in.y") == 4 + 4
    assert btf.bit_offset("outer", "flag") == 130
    assert btf.funcs["bpf_lsm_socket_sendmsg"] == 5
    with pytest.raises(Exception, match="bitfield"):
        btf.offset("outer", "flag")
    with pytest.raises(Exception, match="no field"):
        btf.offset("outer", "in.z")


def test_btf_blob_that_is_not_btf_is_refused():
    from ext_authz.egress.btf import BtfError, FieldOffsets

    with pytest.raises(BtfError, match="magic"):
        FieldOffsets.parse(b"\x00" * 32)
    with pytest.raises(BtfError, match="shorter"):
        FieldOffsets.parse(b"\x9f\xeb")


# ---- the agent seccomp filter (its behaviour is tested for real in test_egress_escapes.py)


def test_seccomp_filter_jumps_stay_inside_the_program_and_it_ends_in_returns():
    from ext_authz.egress import seccomp

    code = seccomp.filter_program()
    insns = [struct.unpack_from("<HBBI", code, i) for i in range(0, len(code), 8)]
    assert len(code) % 8 == 0 and len(insns) < 4096
    for i, (op, jt, jf, _k) in enumerate(insns):
        if op in (seccomp.JEQ_K, seccomp.JGE_K):
            assert i + 1 + max(jt, jf) < len(insns)
    assert insns[-1] == (seccomp.RET_K, 0, 0, seccomp.SECCOMP_RET_ALLOW)
    refused = {k for op, _, _, k in insns if op == seccomp.JEQ_K}
    assert set(seccomp.SYSCALLS_REFUSED.values()) <= refused and socket.AF_VSOCK not in refused


def test_launcher_sees_a_socket_on_stdin():
    from ext_authz.egress.launcher import socket_stdio

    a, b = socket.socketpair()
    try:
        assert socket_stdio({"stdin": a.fileno(), "stdout": -1, "stderr": -1}) == [0]
        assert socket_stdio({"stdin": -3, "stdout": -3, "stderr": -3}) == []  # DEVNULL
    finally:
        a.close()
        b.close()


# ---- seccomp refusals from audit records


RECORD = ('audit(1796174461.268:2): auid=1234 uid=65534 gid=65534 ses=7 pid=26242 comm="python3" '
          'exe="/usr/bin/python3.11" sig=0 arch=c000003e syscall=438 compat=0 ip=0x7fc04b328dc7 code=0x50000')


def test_audit_seccomp_record_is_parsed_and_recognised_as_the_filters():
    from ext_authz.egress.audit import is_filter_refusal, parse_record, record_fields

    rec = parse_record(RECORD)
    assert rec["pid"] == "26242" and rec["comm"] == "python3" and rec["serial"] == "2"
    assert is_filter_refusal(rec)
    assert record_fields(rec)["syscall"] == "pidfd_getfd"
    assert not is_filter_refusal(parse_record(RECORD.replace("syscall=438", "syscall=59")))  # execve: not ours
    assert not is_filter_refusal(parse_record(RECORD.replace("code=0x50000", "code=0x7fff0000")))  # allowed


def test_audit_record_is_attributed_by_login_uid_then_cgroup():
    import struct as st

    from ext_authz.egress.audit import AUDIT_SECCOMP, AuditReader, agent_of

    assert agent_of("12:pids:/\n0::/sealgate/worker/child\n", "sealgate") == "worker"
    assert agent_of("0::/other/worker\n", "sealgate") is None
    got = []
    reader = AuditReader("sealgate", lambda rec, agent: got.append((rec["pid"], agent)), lambda: {1234: "worker"})
    def message(text: str) -> bytes:
        body = text.encode()
        msg = st.pack("=IHHII", 16 + len(body), AUDIT_SECCOMP, 0, 0, 0) + body
        return msg + b"\0" * (-len(msg) % 4)

    stranger = RECORD.replace("auid=1234", "auid=99").replace("pid=26242", "pid=999999999")
    reader.handle(message(RECORD) + message(stranger) + message(RECORD.replace("pid=26242", "pid=7")))
    assert got == [("26242", "worker"), ("7", "worker")]  # the stranger names no agent and its pid is gone
