"""Reading an untrusted tar archive into memory: every header checked before any content is read, nothing extracted, no pickle.

The archive must be plain tar: compressed files (gzip, bzip2, xz, zstd) are refused before
anything is decompressed, and while tarfile parses the headers it reads through a guard that
refuses any extended header (PAX records, GNU long names) over MAX_EXTENDED_HEADER bytes, and
PAX records that are malformed or change a member's size, so memory stays within the file's
own size plus a few kB whatever the headers claim. Written by hand: tarfile has no bounded mode
(its `data` extraction filter guards paths on disk, not the memory its header parser takes).
"""

from __future__ import annotations

import io
import pickletools
import re
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from .errors import BenchError

MAX_MEMBERS = 16
# extended tar headers (PAX records, GNU long names): a submission's names are short, and Python
# 3.11's tarfile parses PAX data with a regex that is quadratic in its length (64 KiB costs seconds)
MAX_EXTENDED_HEADER = 8 << 10
MAX_EXTENDED_TOTAL = 64 << 10  # all extended headers of one archive together
MAX_HEADER_READS = 8  # reads tarfile makes to parse one member's headers (a member and three extended headers)
# the magic numbers of the compressions tarfile (or a user) might use; a tar file starts with a member name
COMPRESSED = {
    "gzip": re.compile(rb"\x1f\x8b\x08"),
    "bzip2": re.compile(rb"BZh[1-9](1AY&SY|\x17rE8P\x90)"),
    "xz": re.compile(rb"\xfd7zXZ\x00"),
    "zstd": re.compile(rb"\x28\xb5\x2f\xfd"),
    "lzma": re.compile(rb"\x5d\x00\x00(?!\x00\x00)"),
}
PICKLE_SUFFIXES = (".pkl", ".pickle", ".pt", ".pth", ".ckpt", ".bin", ".joblib", ".npy", ".npz")


def looks_like_pickle(name: str, data: bytes) -> bool:
    """Return whether a member is (or starts with) a pickle, judged without unpickling anything.

    By name (.pkl, .pt, ...), by the protocol 2-5 header, as a torch.save zip (which holds
    data.pkl), or, for protocols 0-1, because pickletools, which only parses opcodes and checks
    the stack, reads a complete pickle at the start of the file.
    """
    if name.lower().endswith(PICKLE_SUFFIXES):
        return True
    if len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5:
        return True
    if data[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                return any(n.endswith(".pkl") for n in archive.namelist())
        except zipfile.BadZipFile:
            return False
    try:
        pickletools.dis(data[: 1 << 20], out=io.StringIO())
    except Exception:  # any parse error: not a pickle
        return False
    return True


def _member_name(member: tarfile.TarInfo, path: Path) -> str:
    name = member.name
    pure = PurePosixPath(name)
    if not name or name.startswith(("/", "\\")) or "\\" in name or ".." in pure.parts or (len(name) > 1 and name[1] == ":"):
        raise BenchError(f"{path}: member {name!r} has a path outside the archive's root")
    return str(PurePosixPath(*[p for p in pure.parts if p != "."]))


class _HeaderGuard(io.BytesIO):
    """The archive's bytes as tarfile reads them; while armed (tarfile parsing one member's headers), reads are bounded.

    tarfile reads a header as one 512-byte block and an extended header's data (PAX records, a
    GNU long name) in one read of its declared size, before anything else can look at it. Armed,
    the guard refuses an extended header declaring more than MAX_EXTENDED_HEADER bytes (or more
    than MAX_EXTENDED_TOTAL in all), more than MAX_HEADER_READS reads for one member and sparse
    members, and checks PAX records before tarfile's own parser sees them. Disarmed (reading a
    member's contents, whose declared sizes are checked against the size cap first) it is a BytesIO.
    """

    def __init__(self, data: bytes, path: Path) -> None:
        super().__init__(data)
        self.path = path
        self.armed = False
        self.reads = 0
        self.extended = 0  # bytes of extended headers so far
        self.pending: tuple[bytes, int] | None = None  # (type, size) of the extended header whose data comes next

    def arm(self) -> None:
        self.armed, self.reads, self.pending = True, 0, None

    def disarm(self) -> None:
        self.armed = False

    def read(self, size: int | None = -1) -> bytes:  # type: ignore[override]
        if not self.armed:
            return super().read(size)
        self.reads += 1
        if self.reads > MAX_HEADER_READS:
            raise BenchError(f"{self.path}: a member has more extended tar headers than a submission needs; refused")
        if size is None or size < 0 or size > MAX_EXTENDED_HEADER:
            raise BenchError(f"{self.path}: a tar header asks to read {size} bytes at once; at most {MAX_EXTENDED_HEADER} are allowed")
        data = super().read(size)
        pending, self.pending = self.pending, None
        if pending is not None:
            if pending[0] in (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE):
                _check_pax_records(data[: pending[1]], self.path)
        elif size == tarfile.BLOCKSIZE and len(data) == tarfile.BLOCKSIZE:
            self._header(data)
        return data

    def _header(self, block: bytes) -> None:
        kind = block[156:157]
        if kind == tarfile.GNUTYPE_SPARSE:
            raise BenchError(f"{self.path}: member {_field(block[:100])!r} is a sparse file; a submission holds regular files only")
        if kind not in (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK):
            return
        try:
            size = tarfile.nti(block[124:136])
        except tarfile.TarError:
            return  # tarfile refuses the header itself
        what = "PAX header" if kind in (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE) else "GNU long-name header"
        if size < 0 or size > MAX_EXTENDED_HEADER:
            raise BenchError(
                f"{self.path}: a {what} declares {size} bytes; at most {MAX_EXTENDED_HEADER} are allowed "
                "(a submission's names are short: package it with `bench submit`)"
            )
        self.extended += size
        if self.extended > MAX_EXTENDED_TOTAL:
            raise BenchError(f"{self.path}: its extended tar headers add up to more than {MAX_EXTENDED_TOTAL} bytes; refused")
        self.pending = (kind, size)


_PAX_RECORD = re.compile(rb"([1-9][0-9]{0,5}) ([^=\n\x00]{1,64})=")


def _check_pax_records(data: bytes, path: Path) -> None:
    """Raise BenchError unless `data` is a sequence of well-formed PAX records that keep every member's size."""
    pos = 0
    while pos < len(data):
        match = _PAX_RECORD.match(data, pos)
        end = pos + int(match.group(1)) if match else 0
        if match is None or end > len(data) or match.end() > end or data[end - 1 : end] != b"\n":
            raise BenchError(f"{path}: a PAX header holds a malformed record at byte {pos}; refused")
        keyword = match.group(2)
        if keyword == b"size" or keyword.startswith(b"GNU.sparse"):
            raise BenchError(f"{path}: a PAX header sets {keyword.decode(errors='replace')!r}, which a submission may not; refused")
        pos = end


def _field(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def compression_of(data: bytes) -> str | None:
    """Return the name of the compression `data` starts with (gzip, bzip2, xz, zstd, lzma), or None."""
    for name, magic in COMPRESSED.items():
        if magic.match(data):
            return name
    return None


def read_members(data: bytes, path: Path, max_bytes: int, what: str) -> dict[str, bytes]:
    """Return {name: bytes} of an archive's regular files after checking every header (nothing extracted).

    Rejects: compressed files and anything else that is not a plain tar archive; extended headers
    over MAX_EXTENDED_HEADER bytes; links, sparse and special files; absolute or parent-relative
    names; duplicate names; more than MAX_MEMBERS members; declared contents beyond `max_bytes`.
    """
    compression = compression_of(data)
    if compression is not None:
        raise BenchError(
            f"{path} is {compression}-compressed; a submission must be a plain (uncompressed) tar file: "
            "decompress it, or package the run with `bench submit`"
        )
    if data[:4] == b"PK\x03\x04":
        raise BenchError(f"{path} is a zip archive; a submission must be a plain (uncompressed) tar file made by `bench submit`")
    guard = _HeaderGuard(data, path)
    guard.arm()
    try:
        tar = tarfile.open(fileobj=guard, mode="r:")
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        raise BenchError(f"{path} is not a valid submission archive (not a plain tar file: {exc})") from None
    finally:
        guard.disarm()
    files: dict[str, bytes] = {}
    total = 0
    with tar:
        try:
            count = 0
            while True:
                guard.arm()
                try:
                    member = tar.next()  # one header at a time, each read bounded by the guard
                finally:
                    guard.disarm()
                if member is None:
                    break
                count += 1
                if count > MAX_MEMBERS:
                    raise BenchError(f"{path} has more than {MAX_MEMBERS} members; a submission holds {what}")
                if member.issym() or member.islnk():
                    raise BenchError(f"{path}: member {member.name!r} is a link; links are not allowed in a submission")
                name = _member_name(member, path)
                if member.isdir():
                    continue
                if not member.isfile() or member.issparse():
                    raise BenchError(f"{path}: member {member.name!r} is not a regular file")
                total += member.size
                if total > max_bytes:
                    raise BenchError(f"{path} unpacks to more than the allowed {max_bytes / 2**20:.0f} MB (raise it with --max-size-mb)")
                if name in files:
                    raise BenchError(f"{path}: member {name!r} appears twice")
                handle = tar.extractfile(member)
                content = handle.read(member.size + 1) if handle is not None else b""
                if len(content) != member.size:
                    raise BenchError(f"{path}: member {name!r} is truncated")
                files[name] = content
        except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
            raise BenchError(f"{path} is not a valid submission archive (damaged tar: {exc})") from None
    return files
