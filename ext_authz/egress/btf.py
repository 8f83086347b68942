"""The running kernel's BTF (/sys/kernel/btf/vmlinux): function type ids and struct field offsets.

Type ids name the LSM hook a BPF_PROG_TYPE_LSM program attaches to (`lsm.py` probes
whether such programs load here). Field offsets are what a program reading kernel
structs would need: bcc compiles against the Debian headers linked for this kernel, whose
struct layouts need not match the running kernel (6.1 headers, 6.18 kernel here), so
offsets must come from the kernel's own BTF (a stand-in for CO-RE, which bcc lacks).
Pure parsing: `FieldOffsets.parse(bytes)`; I/O only in `load()`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

from ext_authz.egress.kernel import EgressUnavailable

BTF_MAGIC = 0xEB9F
KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION, KIND_ENUM = 1, 2, 3, 4, 5, 6
KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_FUNC = 8, 9, 10, 11, 12
KIND_FUNC_PROTO, KIND_VAR, KIND_DATASEC, KIND_DECL_TAG, KIND_TYPE_TAG, KIND_ENUM64 = 13, 14, 15, 17, 18, 19
# bytes that follow the 12-byte common header: fixed, and per vlen entry
_EXTRA_FIXED = {KIND_INT: 4, KIND_ARRAY: 12, KIND_VAR: 4, KIND_DECL_TAG: 4}
_EXTRA_PER_VLEN = {KIND_STRUCT: 12, KIND_UNION: 12, KIND_ENUM: 8, KIND_FUNC_PROTO: 8, KIND_DATASEC: 12, KIND_ENUM64: 12}
_MODIFIERS = (KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG)


class BtfError(EgressUnavailable):
    """The kernel's BTF is missing, malformed, or lacks a struct field the programs read."""


@dataclass(frozen=True)
class _Member:
    name: str
    type_id: int
    bit_offset: int
    bitfield: bool


@dataclass
class _Type:
    kind: int
    name: str
    ref: int  # size for struct/union/int, referenced type id otherwise
    members: tuple[_Member, ...] = ()


@dataclass
class FieldOffsets:
    """Struct types by name, resolved to byte offsets of (possibly nested, anonymous) members."""

    types: list[_Type] = field(default_factory=list)
    by_name: dict[str, int] = field(default_factory=dict)
    funcs: dict[str, int] = field(default_factory=dict)  # FUNC name -> type id (what attach_btf_id names)

    @classmethod
    def parse(cls, blob: bytes) -> FieldOffsets:
        if len(blob) < 24:
            raise BtfError(f"BTF blob of {len(blob)} bytes is shorter than its header")
        magic, _version, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from("<HBBIIIII", blob)
        if magic != BTF_MAGIC:
            raise BtfError(f"not BTF: magic {magic:#x}, expected {BTF_MAGIC:#x} (little-endian)")
        types_at, strings_at = hdr_len + type_off, hdr_len + str_off
        if strings_at + str_len > len(blob) or types_at + type_len > len(blob):
            raise BtfError("BTF sections run past the end of the blob")
        strings = blob[strings_at:strings_at + str_len]

        def name_at(off: int) -> str:
            end = strings.find(b"\0", off)
            return strings[off:end if end >= 0 else None].decode(errors="replace")

        out = cls(types=[_Type(0, "void", 0)])
        pos, end = types_at, types_at + type_len
        while pos < end:
            name_off, info, size_or_type = struct.unpack_from("<III", blob, pos)
            pos += 12
            kind, vlen, kflag = (info >> 24) & 0x1F, info & 0xFFFF, info >> 31
            members: tuple[_Member, ...] = ()
            if kind in (KIND_STRUCT, KIND_UNION):
                ms = []
                for i in range(vlen):
                    m_name, m_type, m_off = struct.unpack_from("<III", blob, pos + 12 * i)
                    bits = m_off & 0xFFFFFF if kflag else m_off
                    ms.append(_Member(name_at(m_name), m_type, bits, bool(kflag and m_off >> 24)))
                members = tuple(ms)
            pos += _EXTRA_FIXED.get(kind, 0) + _EXTRA_PER_VLEN.get(kind, 0) * vlen
            name = name_at(name_off)
            out.types.append(_Type(kind, name, size_or_type, members))
            if kind in (KIND_STRUCT, KIND_UNION) and name and name not in out.by_name:
                out.by_name[name] = len(out.types) - 1
            elif kind == KIND_FUNC and name:
                out.funcs.setdefault(name, len(out.types) - 1)
        return out

    def _strip(self, type_id: int) -> _Type:
        t = self.types[type_id]
        while t.kind in _MODIFIERS:
            t = self.types[t.ref]
        return t

    def _find(self, t: _Type, name: str) -> tuple[int, _Member] | None:
        """(bit offset, member) of `name` in t, looking through anonymous structs and unions."""
        for m in t.members:
            if m.name == name:
                return m.bit_offset, m
        for m in t.members:
            inner = self._strip(m.type_id)
            if not m.name and inner.kind in (KIND_STRUCT, KIND_UNION):
                found = self._find(inner, name)
                if found:
                    return m.bit_offset + found[0], found[1]
        return None

    def offset(self, struct_name: str, path: str) -> int:
        """Byte offset of struct_name.path (dots walk into embedded structs, not through pointers)."""
        bits, bitfield = self._bits(struct_name, path)
        if bitfield or bits % 8:
            raise BtfError(f"{struct_name}.{path} is a bitfield; the programs read whole bytes")
        return bits // 8

    def bit_offset(self, struct_name: str, path: str) -> int:
        """Bit offset of a field (a bitfield too): on little-endian, bit n is bit n % 8 of byte n // 8."""
        return self._bits(struct_name, path)[0]

    def _bits(self, struct_name: str, path: str) -> tuple[int, bool]:
        if struct_name not in self.by_name:
            raise BtfError(f"struct {struct_name} not in the kernel's BTF")
        t = self.types[self.by_name[struct_name]]
        bits = 0
        for part in path.split("."):
            found = self._find(t, part)
            if found is None:
                raise BtfError(f"struct {struct_name} has no field {path!r} (at {part!r}) in the kernel's BTF")
            off, member = found
            bits += off
            t = self._strip(member.type_id)
        return bits, member.bitfield

    def first_offset(self, struct_name: str, *paths: str) -> int:
        """The offset of the first of `paths` the kernel has (fields renamed between versions)."""
        errors = []
        for p in paths:
            try:
                return self.offset(struct_name, p)
            except BtfError as e:
                errors.append(str(e))
        raise BtfError("; ".join(errors))


VMLINUX_BTF = "/sys/kernel/btf/vmlinux"


def load(path: str = VMLINUX_BTF) -> FieldOffsets:
    try:
        blob = Path(path).read_bytes()
    except OSError as e:
        raise BtfError(f"no kernel BTF at {path} ({e}): BTF-typed programs (LSM) need it") from e
    return FieldOffsets.parse(blob)

