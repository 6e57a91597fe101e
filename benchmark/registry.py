"""Name -> object registries; a miss lists the valid names."""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from .errors import BenchError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of objects, filled with the `register(name)` decorator."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Return a decorator that stores its argument under `name`."""

        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return add

    def add(self, name: str, obj: T) -> T:
        """Store `obj` under `name` and return it."""
        return self.register(name)(obj)

    def get(self, name: str) -> T:
        """Return the object registered as `name`; a miss raises BenchError naming the valid ones."""
        try:
            return self._items[name]
        except KeyError:
            raise BenchError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        """Return the registered names in registration order."""
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)
