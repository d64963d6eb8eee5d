"""The portal: the pages residents, caseworkers, supervisors and administrators use — a backend-for-frontend that
owns no domain data. Every read and write goes through the four services' public APIs with the signed-in person's own
token, so authorization stays where it is; sign-in is OpenID Connect (authorization code with PKCE), against the
embedded provider in development or an external one in production."""
