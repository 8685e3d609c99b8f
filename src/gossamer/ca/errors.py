"""The CA edge's exceptions: `CaError` is the one a caller catches, and the message
says what to fix.

    CaError                 the CA cannot do it: its root, a plug-in CA file, a
     │                      rotation step, a token (`pki.py`, `authority.py`, ...);
     │                      the CA service answers INVALID_ARGUMENT
     └── CsrRejected        the CSR is malformed, badly signed, uses a weak key, or
          │                 asks for names it may not
          └── IdentityMismatch  it asks for a SPIFFE ID other than the caller's
                                own; the CA service answers PERMISSION_DENIED
"""

from __future__ import annotations


class CaError(Exception):
    """The CA edge's one exception type: the message says what to fix."""


class CsrRejected(CaError):
    """The CSR is malformed, badly signed, uses a weak key, or asks for names it may not."""


class IdentityMismatch(CsrRejected):
    """The CSR asks for a SPIFFE ID other than the one the caller is entitled to."""
