"""LAMMPS's text dumps (``dump ... atom`` and ``dump ... custom``): snapshots of atoms.

A dump is a sequence of blocks, each::

    ITEM: TIMESTEP / N / ITEM: NUMBER OF ATOMS / M /
    ITEM: BOX BOUNDS [xy xz yz] pp pp pp / 3 lines of lo hi [tilt] /
    ITEM: ATOMS id type xs ys zs ... / M lines, one per atom

(``ITEM: TIME`` and ``ITEM: UNITS`` may come too). A block gives one
``snapshot`` record when its last atom line is read. The atoms kept are at
most ``max_atoms``: those whose ids hash lowest (a fixed multiplicative
hash), so the same atoms are kept in every snapshot while they exist, and
the kept ones come sorted by id (ranks write their atoms in their own
order). Only the kept atoms are held, never the whole block. Scaled
coordinates (xs, xsu, ...) are given in box coordinates (x, xu, ...),
tilted boxes included; the box is the box itself, not the bounding box that
the dump writes for a tilted one.
"""

import heapq
import re

from agent.parsers import base

#: the default of ``max_atoms``: what a 3D view draws without effort
MAX_ATOMS = 2000

_ITEM = b"ITEM: "
_UNITS_OR_TIME = (b"UNITS", b"TIME")
#: scaled coordinate columns and the box coordinate columns they become
_SCALED = {"xs": "x", "ys": "y", "zs": "z", "xsu": "xu", "ysu": "yu", "zsu": "zu"}
_TEXT_COLUMNS = frozenset(["element"])
_SPACES = re.compile(rb"\s+")


def _key(atom_id):
    """The hash that picks the atoms kept: a permutation of 32-bit ids."""
    return (atom_id * 0x9E3779B1) & 0xFFFFFFFF


class LammpsDump(base.Parser):
    name = "lammps_dump"

    def __init__(self, max_atoms=MAX_ATOMS, **options):
        if max_atoms < 0:
            raise ValueError(f"max_atoms={max_atoms} must not be negative")
        self.max_atoms = max_atoms
        super().__init__(**options)

    def _clear(self):
        #: what the value lines that follow are: an ITEM name, or None (skip)
        self._item = None
        #: the block being read (None before its ITEM: TIMESTEP, or when broken)
        self._block = None

    def _line(self, line, out):
        if line.startswith(_ITEM):
            self._item_line(line[len(_ITEM) :], out)
            return
        b = self._block
        if b is None or self._item is None:
            return
        try:
            if self._item == b"ATOMS":
                b.atom(line)
                if b.seen == b.natoms:
                    self._emit(out)
            elif self._item == b"TIMESTEP":
                b.step = self._int(line)
                self._item = None
            elif self._item == b"NUMBER OF ATOMS":
                b.natoms = self._int(line)
                if b.natoms < 0:
                    raise base.NotANumber(line)
                self._item = None
            elif self._item == b"BOX BOUNDS":
                b.bound(base.numbers(line.split()))
            elif self._item == b"TIME":
                b.time = base.number(line.strip())
                self._item = None
            else:
                self._item = None
        except base.NotANumber:
            self._broken(out, f"step {b.step}: a bad {base.text(self._item)} line")

    def _item_line(self, name, out):
        name = name.rstrip()
        b = self._block
        if b is not None and b.columns is not None:
            # atoms were missing
            self._incomplete(out)
            b = None
        if name == b"TIMESTEP":
            self._block = _Block(self.max_atoms)
            self._item = name
        elif b is None:
            self._item = None
        elif name == b"NUMBER OF ATOMS" or name in _UNITS_OR_TIME:
            self._item = name
        elif name.startswith(b"BOX BOUNDS"):
            b.start_box(name[len(b"BOX BOUNDS") :].split())
            self._item = b"BOX BOUNDS"
        elif name.startswith(b"ATOMS"):
            if b.step is None or b.natoms is None or len(b.box) != 3:
                self._broken(
                    out, f"step {b.step}: ITEM: ATOMS before its step, count or box"
                )
                return
            b.start_atoms([base.text(c) for c in name[len(b"ATOMS") :].split()])
            self._item = b"ATOMS"
            if b.natoms == 0:
                self._emit(out)
        else:
            # an item this parser does not know: its lines are skipped
            self._item = None

    def _end(self, out):
        if self._block is not None and self._block.columns is not None:
            self._incomplete(out)

    def _gap(self, out):
        b = self._block
        if b is not None:
            self._broken(out, f"step {b.step}: the snapshot was cut by bytes not read")

    def _int(self, line):
        v = base.number(line.strip())
        if not isinstance(v, int):
            raise base.NotANumber(line)
        return v

    def _emit(self, out):
        b = self._block
        self._block = None
        self._item = None
        out.append(b.snapshot())

    def _incomplete(self, out):
        b = self._block
        self._broken(
            out, f"step {b.step}: the snapshot ended after {b.seen} of {b.natoms} atoms"
        )

    def _broken(self, out, message):
        self._block = None
        self._item = None
        out.append({"kind": "note", "message": message})


class _Block:
    """One snapshot as it is read: its header, and the atoms kept so far."""

    def __init__(self, max_atoms):
        self.max_atoms = max_atoms
        self.step = None
        self.natoms = None
        self.time = None
        #: [[lo, hi], ...] as written (bounding box if tilted); tilt factors
        self.box = []
        self.tilt = None
        self.boundary = []
        #: None until ITEM: ATOMS
        self.columns = None
        #: atom lines read (good or not)
        self.seen = 0
        #: (-key, -id, seq, values) of the kept atoms: a max-heap on key
        self._heap = []
        self._id_index = None
        self._text_indexes = ()
        #: [(column index, axis)] of scaled coordinates, converted on keeping
        self._scaled = []

    def start_box(self, flags):
        tilted = flags[:3] == [b"xy", b"xz", b"yz"]
        self.boundary = [base.text(f) for f in (flags[3:] if tilted else flags)]
        if tilted:
            self.tilt = []

    def bound(self, values):
        if len(self.box) == 3 or len(values) != (2 if self.tilt is None else 3):
            raise base.NotANumber(b"box bounds")
        if any(v is None for v in values):
            raise base.NotANumber(b"box bounds")
        self.box.append(values[:2])
        if self.tilt is not None:
            self.tilt.append(values[2])
            if len(self.box) == 3:
                self._untilt()

    def _untilt(self):
        # the dump writes the bounding box of the tilted box: take it back
        xy, xz, yz = self.tilt
        (xlo, xhi), (ylo, yhi), z = self.box
        self.box = [
            [xlo - min(0.0, xy, xz, xy + xz), xhi - max(0.0, xy, xz, xy + xz)],
            [ylo - min(0.0, yz), yhi - max(0.0, yz)],
            z,
        ]

    def start_atoms(self, names):
        self._id_index = names.index("id") if "id" in names else None
        self._text_indexes = tuple(i for i, n in enumerate(names) if n in _TEXT_COLUMNS)
        scaled = {n: i for i, n in enumerate(names) if n in _SCALED}
        # a tilted box mixes the axes: convert only a whole x, y, z triple
        for trio in (("xs", "ys", "zs"), ("xsu", "ysu", "zsu")):
            present = [n for n in trio if n in scaled]
            if self.tilt is None or len(present) == 3:
                self._scaled.extend((scaled[n], trio.index(n), trio) for n in present)
        converted = {i for i, _, _ in self._scaled}
        self.columns = [
            _SCALED[n] if i in converted else n for i, n in enumerate(names)
        ]

    def atom(self, line):
        self.seen += 1
        tokens = line.split()
        if len(tokens) != len(self.columns):
            return
        try:
            if self._id_index is None:
                atom_id = self.seen
            else:
                atom_id = base.number(tokens[self._id_index])
                if not isinstance(atom_id, int):
                    return
            key = _key(atom_id)
            h = self._heap
            full = len(h) >= self.max_atoms
            if full and (self.max_atoms == 0 or (-h[0][0], -h[0][1]) <= (key, atom_id)):
                return
            values = [
                base.text(t) if i in self._text_indexes else base.number(t)
                for i, t in enumerate(tokens)
            ]
        except base.NotANumber:
            return
        if self._scaled and not self._scale(values):
            return
        item = (-key, -atom_id, self.seen, values)
        if full:
            heapq.heapreplace(h, item)
        else:
            heapq.heappush(h, item)

    def _scale(self, values):
        """Scaled coordinates to box ones, in place; False if one is not a number."""
        s = {}
        for i, axis, trio in self._scaled:
            v = values[i]
            if v is None or isinstance(v, str):
                return False
            s[trio, axis] = (i, v)
        (xlo, xhi), (ylo, yhi), (zlo, zhi) = self.box
        xy, xz, yz = self.tilt or (0.0, 0.0, 0.0)
        for (trio, axis), (i, v) in s.items():
            if axis == 0:
                x = xlo + v * (xhi - xlo)
                if self.tilt is not None:
                    x += s[trio, 1][1] * xy + s[trio, 2][1] * xz
            elif axis == 1:
                x = ylo + v * (yhi - ylo)
                if self.tilt is not None:
                    x += s[trio, 2][1] * yz
            else:
                x = zlo + v * (zhi - zlo)
            values[i] = x
        return True

    def snapshot(self):
        atoms = sorted(self._heap, key=lambda a: (-a[1], a[2]))
        return {
            "kind": "snapshot",
            "step": self.step,
            "time": self.time,
            "natoms": self.natoms,
            "box": self.box,
            "tilt": self.tilt,
            "boundary": self.boundary,
            "columns": self.columns,
            "atoms": [a[3] for a in atoms],
        }
