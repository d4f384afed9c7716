"""The database contract: schema, migrations and every query live under here."""
