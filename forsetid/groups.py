"""The groups (Forseti's calls) a leader knows: those of its config file, those added and
removed at run time, and those its workers bring back in their hellos after it restarts
(so that a group added at run time outlives the leader that was told of it)."""

from __future__ import annotations

from . import protocol as p


class Groups:
    def __init__(self, calls: dict[str, p.Call]) -> None:
        self.calls = dict(calls)

    def unknown(self, msg: p.Msg, group: str) -> p.Error | None:
        """The error for a request about ``group`` if no such group is known."""
        if group in self.calls:
            return None
        known = ", ".join(sorted(self.calls)) or "none"
        return p.Error(id=msg.id, kind=p.UNKNOWN_GROUP, message=f"unknown group '{group}' (known: {known})")

    def add(self, msg: p.AddCall) -> p.Error | str:
        """Add (or, told to, replace) a group: what happened, or why not."""
        if msg.name in self.calls and not msg.replace:
            text = (
                f"group '{msg.name}' exists already; to change it, add it with replace (forsetictl add-call "
                f"{msg.name} --replace --command ..., the option anywhere before a --)"
            )
            return p.Error(id=msg.id, kind=p.GROUP_EXISTS, message=text)
        what = "replaced" if msg.name in self.calls else "added"
        self.calls[msg.name] = msg.call
        return what

    def remove(self, msg: p.RemoveCall) -> p.Error | None:
        """Remove a group (its processes go on until they exit), or why not."""
        error = self.unknown(msg, msg.name)
        if error is None:
            del self.calls[msg.name]
        return error

    def learn(self, calls: dict[str, p.Call]) -> None:
        """A worker's groups: those this leader lacks (its own word stands for the rest)."""
        for name, call in calls.items():
            self.calls.setdefault(name, call)

    def listing(self) -> dict[str, p.Call]:
        return dict(sorted(self.calls.items()))
