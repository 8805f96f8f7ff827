"""Security area: STRICT mTLS and its narrow exceptions, JWT authentication, default-deny
authorization with explicit ALLOW rules.

`settings.py` holds `security`, `services[i].jwt` and `services[i].authorization`;
`rules.py` the cross-field rules the root model runs; `specs.py` the pure policy
builders; `component.py` is `MeshSecurity`, which reads callers and routes from the
ServiceGraph region.py builds. Only settings and rules are imported here: the root
settings model imports this package, and the component would pull Pulumi and the Istio
area into it.
"""

from components.security.rules import (
    check_allow_rules_can_match,
    check_grpc_protected_paths,
    check_identity_providers,
    check_jwt_providers,
    check_mtls_exceptions_admit_plaintext,
)
from components.security.settings import (
    AllowRule,
    IdentityProvider,
    JwtSettings,
    MtlsException,
    SecuritySettings,
)

__all__ = [
    "AllowRule",
    "IdentityProvider",
    "JwtSettings",
    "MtlsException",
    "SecuritySettings",
    "check_allow_rules_can_match",
    "check_grpc_protected_paths",
    "check_identity_providers",
    "check_jwt_providers",
    "check_mtls_exceptions_admit_plaintext",
]
