"""Which keys of an inline JWKS Envoy can use, by the rules of its JWT library
(jwt_verify_lib, `Jwks::createFrom`): a JWKS none of whose keys it can use is a
NACK of the whole listener, so it is refused at apply instead.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

_CURVES: dict[str, tuple[str, ec.EllipticCurve]] = {
    "P-256": ("ES256", ec.SECP256R1()), "P-384": ("ES384", ec.SECP384R1()),
    "P-521": ("ES512", ec.SECP521R1())}
_ED25519_KEY_BYTES = 32
_RSA_MIN_BITS, _RSA_MAX_BITS = 512, 16384


def _b64url(jwk: dict[str, Any], field: str) -> bytes:
    """A base64url member (padding optional, as absl's WebSafeBase64Unescape reads)."""
    value = jwk.get(field)
    if not isinstance(value, str):
        raise ValueError(f'"{field}" is missing or not a string')
    try:
        return base64.b64decode(value + "=" * (-len(value) % 4), altchars=b"-_",
                                validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f'"{field}" is not base64url') from exc


def _alg(jwk: dict[str, Any]) -> str:
    alg = jwk.get("alg")
    return alg if isinstance(alg, str) else ""


def _rsa(jwk: dict[str, Any]) -> None:
    if _alg(jwk) and not _alg(jwk).startswith("RS"):
        raise ValueError(f'an RSA key\'s "alg" must start with RS, not {_alg(jwk)!r}')
    n = int.from_bytes(_b64url(jwk, "n"), "big")
    if int.from_bytes(_b64url(jwk, "e"), "big") not in (3, 65537):
        raise ValueError('an RSA key\'s "e" must be 3 or 65537')
    # BoringSSL's checks of a public key, as Envoy 1.40 applies them (found by trial).
    if not (_RSA_MIN_BITS <= n.bit_length() <= _RSA_MAX_BITS) or n % 2 == 0:
        raise ValueError(f'an RSA key\'s "n" must be odd, of {_RSA_MIN_BITS} to '
                         f"{_RSA_MAX_BITS} bits")


def _ec(jwk: dict[str, Any]) -> None:
    alg, crv = _alg(jwk), jwk.get("crv", "")
    if not isinstance(crv, str):
        raise ValueError('"crv" is not a string')
    if alg and not alg.startswith("ES"):
        raise ValueError(f'an EC key\'s "alg" must start with ES, not {alg!r}')
    by_alg = {a: c for c, (a, _) in _CURVES.items()}
    if alg and crv and by_alg.get(alg) != crv:
        raise ValueError(f'"alg" {alg!r} does not go with "crv" {crv!r}')
    name = crv or by_alg.get(alg) or ("" if alg else "P-256")
    if name not in _CURVES:
        raise ValueError(f"unsupported curve {name or alg!r}: use P-256, P-384 or P-521")
    x, y = (int.from_bytes(_b64url(jwk, f), "big") for f in ("x", "y"))
    try:
        ec.EllipticCurvePublicNumbers(x, y, _CURVES[name][1]).public_key()
    except ValueError as exc:
        raise ValueError(f'"x" and "y" are not a point of {name}') from exc


def _oct(jwk: dict[str, Any]) -> None:
    if _alg(jwk) not in ("", "HS256", "HS384", "HS512"):
        raise ValueError(f'an oct key\'s "alg" must be HS256, HS384 or HS512, not {_alg(jwk)!r}')
    if not _b64url(jwk, "k"):
        raise ValueError('"k" is empty')


def _okp(jwk: dict[str, Any]) -> None:
    if _alg(jwk) not in ("", "EdDSA"):
        raise ValueError(f'an OKP key\'s "alg" must be EdDSA, not {_alg(jwk)!r}')
    if jwk.get("crv") != "Ed25519":
        raise ValueError('an OKP key\'s "crv" must be Ed25519')
    if len(_b64url(jwk, "x")) != _ED25519_KEY_BYTES:
        raise ValueError(f'"x" of an Ed25519 key is {_ED25519_KEY_BYTES} bytes')


_BY_KTY: dict[str, Callable[[dict[str, Any]], None]] = {
    "RSA": _rsa, "EC": _ec, "oct": _oct, "OKP": _okp}


def check_usable_key(keys: list[Any]) -> None:
    """ValueError naming each key's problem when Envoy could use none of `keys`."""
    problems = []
    for i, jwk in enumerate(keys):
        if not isinstance(jwk, dict):
            problems.append(f"keys[{i}]: not an object")
            continue
        check = _BY_KTY.get(jwk.get("kty"))  # type: ignore[arg-type]
        if check is None:
            problems.append(f"keys[{i}]: kty {jwk.get('kty')!r} is not RSA, EC, oct or OKP")
            continue
        try:
            check(jwk)
        except ValueError as exc:
            problems.append(f"keys[{i}]: {exc}")
            continue
        return
    raise ValueError("no key Envoy can use: " + "; ".join(problems))
