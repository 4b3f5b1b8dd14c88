"""One socket's view of one stream (a room, or its user's direct messages): in seq order, each once.

The layer may deliver a stream's messages out of order (two workers publish at once), twice
(a redelivery), or not at all (a broker crash). A feed releases message ``n`` only after
``n - 1``; it drops what it released already; and it says when it holds messages behind a gap,
so the consumer can read the missing ones from the store. While the socket (re)joins, the feed
holds everything live until the store read tells it where the stream stands: that is the seam
between recovered and live messages, with no gap and no duplicate.
"""

from __future__ import annotations

from typing import Any

Message = dict[str, Any]


class Feed:
    def __init__(self) -> None:
        self.next_seq: int | None = None  # None: the first live message sets it (unless holding)
        self.holding = False
        self.held: dict[int, Message] = {}

    def recovering(self) -> None:
        """A store read starts: hold live messages until :meth:`start`."""
        self.holding = True

    def start(self, last_seq: int) -> list[Message]:
        """The store read ended at ``last_seq`` (sent already): the held messages that follow it."""
        self.holding = False
        self.next_seq = last_seq + 1
        return self._release()

    def skip_gap(self) -> list[Message]:
        """The missing messages are gone (pruned): go on from the first held one."""
        self.next_seq = min(self.held, default=self.next_seq)
        return self._release()

    def offer(self, message: Message) -> list[Message]:
        """A live message: what can be sent now (maybe nothing, maybe several held ones)."""
        seq = int(message["seq"])
        if self.next_seq is not None and seq < self.next_seq:
            return []  # sent already
        self.held[seq] = message
        if self.holding:
            return []
        if self.next_seq is None:
            self.next_seq = seq
        return self._release()

    @property
    def gap(self) -> bool:
        """Messages wait behind a missing seq."""
        return not self.holding and bool(self.held)

    def _release(self) -> list[Message]:
        assert self.next_seq is not None
        out: list[Message] = []
        for seq in [seq for seq in self.held if seq < self.next_seq]:
            del self.held[seq]
        while self.next_seq in self.held:
            out.append(self.held.pop(self.next_seq))
            self.next_seq += 1
        return out
