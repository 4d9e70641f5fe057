"""One module per spec tag; one function per operation (see gateway/spec.py for the naming rule).

Handlers are thin: take the parsed parameters and the caller's Principal, call the domain,
shape the response."""

import pkgutil

# Operators may drop extra handler modules into another `handlers/` directory on PYTHONPATH.
__path__ = pkgutil.extend_path(__path__, __name__)
