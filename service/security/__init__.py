"""Security: TLS material and credentials, tokens and authenticators, the policy, reloading, the dev PKI."""
