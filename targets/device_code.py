"""Which NVIDIA architectures a library carries device code for, read from the file's bytes.

TVM packs CUDA binaries inside its own blob in the exported library, so `cuobjdump` finds nothing there. This
scan finds them anyway, without a GPU or CUDA tools: fatbin containers (magic 0xBA55ED50, one entry per
architecture: SASS as an ELF image, or PTX) and bare cubins (ELF images with e_machine EM_CUDA). A library whose
CUDA source was never compiled (TVM without its CUDA runtime) has neither.
"""

from __future__ import annotations

import struct
from pathlib import Path

FATBIN_MAGIC = struct.pack("<I", 0xBA55ED50)
FATBIN_ELF, FATBIN_PTX = 2, 1  # entry kinds
ELF_MAGIC = b"\x7fELF"
EM_CUDA = 190


def device_architectures(library: Path) -> list[str]:
    """Sorted `sm_XX` (SASS) and `compute_XX` (PTX) names of the device code inside `library`."""
    data = Path(library).read_bytes()
    found = _fatbin_entries(data) | _cubin_archs(data)
    return sorted(found, key=lambda name: (name.startswith("compute"), int(name.rsplit("_", 1)[1])))


def _fatbin_entries(data: bytes) -> set[str]:
    found: set[str] = set()
    start = data.find(FATBIN_MAGIC)
    while start >= 0:
        if start + 16 <= len(data):
            _, version, header_size, fat_size = struct.unpack_from("<IHHQ", data, start)
            if version == 1 and header_size == 16:
                found |= _entries(data, start + header_size, min(start + header_size + fat_size, len(data)))
        start = data.find(FATBIN_MAGIC, start + 4)
    return found


def _entries(data: bytes, offset: int, end: int) -> set[str]:
    """Entry headers: kind u16, version u16, header size u32, payload size u64, ..., arch u32 at +28."""
    found: set[str] = set()
    while offset + 32 <= end:
        kind, _, header_size, payload_size = struct.unpack_from("<HHIQ", data, offset)
        arch = struct.unpack_from("<I", data, offset + 28)[0]
        if kind not in (FATBIN_ELF, FATBIN_PTX) or header_size < 32 or not 0 < arch < 1000:
            break
        found.add(f"{'sm' if kind == FATBIN_ELF else 'compute'}_{arch}")
        offset += header_size + payload_size
    return found


def _cubin_archs(data: bytes) -> set[str]:
    """64-bit ELF images for EM_CUDA; CUDA 13 stores the SM number in bits 8-15 of e_flags."""
    found: set[str] = set()
    start = data.find(ELF_MAGIC)
    while start >= 0:
        if start + 64 <= len(data) and data[start + 4] == 2:
            machine = struct.unpack_from("<H", data, start + 18)[0]
            flags = struct.unpack_from("<I", data, start + 48)[0]
            if machine == EM_CUDA and (flags >> 8) & 0xFF:
                found.add(f"sm_{(flags >> 8) & 0xFF}")
        start = data.find(ELF_MAGIC, start + 4)
    return found
