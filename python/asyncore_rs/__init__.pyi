__all__ = ["install"]

__version__: str

def install() -> None: ...
