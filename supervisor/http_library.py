"""The file library's HTTP API (`library`): streamed uploads, ranged downloads.

``PUT /api/library/{name}`` streams its body to disk as it arrives, never
holding it in memory; its size (``Content-Length``, needed) is checked
against the plan before a byte is read. A dropped upload keeps what
arrived: ``GET /api/library/{name}/upload`` says how much, and a ``PUT``
with ``Upload-Offset: N`` sends the rest. ``GET /api/library/{name}``
serves the bytes in chunks, with one ``Range`` (``bytes=A-B``, ``A-``,
``-N``) as a 206.
"""

import asyncio
import os
import re

from supervisor import errors, schema
from supervisor.http_base import Base
from supervisor.openapi import Op, action, ops

#: bytes per write of a download
_CHUNK_BYTES = 256 * 1024
#: an upload's whole body (a pause of ``body_timeout_secs`` ends it sooner)
_WHOLE_BODY_SECS = 7 * 24 * 3600
_RANGE_RE = re.compile(r"bytes=([0-9]{0,18})-([0-9]{0,18})")
_DIGITS_RE = re.compile(r"[0-9]{1,18}")


class LibraryList(Base):
    api = ops(
        get=Op("your library's files", [schema.LibraryFile]),
        post=Op(
            "copy an output file of a simulation into your library",
            schema.LibraryFile,
            201,
            request=schema.LibrarySave,
            also=(404,),
        ),
    )

    def get(self):
        self.reply(self.sv.library.list(self.require_user()))

    async def post(self):
        u = self.require_user()
        b = self.body(schema.LibrarySave)
        e = await self.sv.files.save_to_library(
            u, b["simulation"], b["path"], b["name"]
        )
        self.reply(e, 201)


class LibraryFile(Base):
    api = ops(
        put=Op(
            "upload a file: the body is its bytes (Upload-Offset: N sends the "
            "rest of an interrupted upload)",
            schema.LibraryFile,
            201,
            request_content="application/octet-stream",
            # by plan, from the headers (`library.Library.begin`)
            max_body_bytes=2**62,
            also=(411,),
        ),
        get=Op(
            "download a file (Range works)",
            content="application/octet-stream",
            lookup=True,
            also=(206, 416),
        ),
        patch=Op(
            "rename it", schema.LibraryFile, request=schema.LibraryRename, lookup=True
        ),
        delete=action(
            "delete it (refused while a run uses it)", schema.Deleted, lookup=True
        ),
    )

    def initialize(self, sv):
        super().initialize(sv)
        self._upload = None
        self._idle = None

    async def prepare(self):
        super().prepare()
        if self.request.method != "PUT" or self._finished or self._refusal:
            return
        try:
            n = _header_int(self.request, "Content-Length")
            if n is None:
                raise errors.LengthRequired(
                    "length_required", "send the file with its Content-Length"
                )
            o = _header_int(self.request, "Upload-Offset") or 0
            self._upload = await self.sv.library.begin(
                self.user, self.path_args[0], o + n, o
            )
        except errors.Error as e:
            self._refuse(e)
            return
        # a big file takes its time: no deadline for the whole body, only
        # for a pause in it (`_idle`)
        self.request.connection.set_body_timeout(_WHOLE_BODY_SECS)
        self._arm_idle()

    def data_received(self, chunk):
        if self._upload is None:
            super().data_received(chunk)
            return
        if self._finished or self._refusal is not None:
            return
        self._arm_idle()
        try:
            f = self._upload.write(chunk)
        except (errors.Error, OSError) as e:
            self._failed(e)
            return None
        return None if f is None else self._written(f)

    async def _written(self, flush):
        # the next chunk is read once the flush before is on disk
        try:
            await flush
        except OSError as e:
            self._failed(e)

    def _failed(self, e):
        # nothing more of it is read; what is on disk stays for a resume
        self._unread = True
        self._end_upload()
        self._handle_request_exception(e)

    async def put(self, name):
        try:
            e = await self._upload.finish()
        finally:
            self._end_upload()
        self.reply(e, 201)

    async def get(self, name):
        u = self.require_user()
        f = self.sv.library.get(u, name)
        p = self.sv.library.blob_path(u, name)
        try:
            start, end = _range(self.request.headers.get("Range"), f["size"])
        except errors.RangeNotSatisfiable:
            self.set_header("Content-Range", f"bytes */{f['size']}")
            raise
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("Accept-Ranges", "bytes")
        self.set_header("X-Sha256", f["sha256"])
        if (start, end) != (0, f["size"]):
            self.set_status(206)
            self.set_header("Content-Range", f"bytes {start}-{end - 1}/{f['size']}")
        self.set_header("Content-Length", str(end - start))
        with open(p, "rb") as fh:
            o = start
            while o < end:
                b = await asyncio.to_thread(
                    os.pread, fh.fileno(), min(_CHUNK_BYTES, end - o), o
                )
                if not b:
                    break
                o += len(b)
                self.write(b)
                await self.flush()
        self.finish()

    async def patch(self, name):
        u = self.require_user()
        self.sv.library.get(u, name)
        new = self.body(schema.LibraryRename)["name"]
        self.reply(await self.sv.library.rename(u, name, new))

    async def delete(self, name):
        u = self.require_user()
        self.sv.library.get(u, name)
        self.body(schema.NoBody)
        self.reply(await self.sv.library.delete(u, name))

    def _arm_idle(self):
        if self._idle is not None:
            self._idle.cancel()
        self._idle = asyncio.get_running_loop().call_later(
            self.sv.cfg.body_timeout_secs, self._idle_out
        )

    def _idle_out(self):
        # nothing came for that long: what arrived stays for a resume
        self._idle = None
        self._end_upload()
        self.request.connection.close()

    def on_connection_close(self):
        self._end_upload()
        super().on_connection_close()

    def on_finish(self):
        self._end_upload()

    def _end_upload(self):
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if self._upload is not None:
            self.sv.library.end(self._upload)
            self._upload = None


class LibraryUpload(Base):
    api = ops(
        get=Op(
            "how much of an interrupted upload arrived", schema.UploadState, lookup=True
        )
    )

    def get(self, name):
        self.reply(self.sv.library.partial(self.require_user(), name))


def _header_int(request, name):
    v = request.headers.get(name)
    if v is None:
        return None
    if not _DIGITS_RE.fullmatch(v):
        raise errors.BadInput(f"bad_{name.lower().replace('-', '_')}", f"{name}: {v!r}")
    return int(v)


def _range(header, size):
    """(start, end) of the bytes to send: the whole file, or one `header` range.

    A header that is not one range of bytes is ignored (RFC 9110: the whole
    file); one that starts past the end is a 416.
    """
    m = _RANGE_RE.fullmatch(header.strip()) if header else None
    if m is None or not (m.group(1) or m.group(2)):
        return 0, size
    a, b = m.group(1), m.group(2)
    if not a:
        # the last b bytes
        if not int(b) or not size:
            raise errors.RangeNotSatisfiable(
                "range_not_satisfiable", f"the file has {size} bytes"
            )
        return max(0, size - int(b)), size
    start = int(a)
    end = min(size, int(b) + 1) if b else size
    if start >= size or (b and int(b) < start):
        raise errors.RangeNotSatisfiable(
            "range_not_satisfiable", f"the file has {size} bytes"
        )
    return start, end
