"""The JSON APIs that are not console pages: campaign CRUD, sensor pairing, agent releases, roster downloads."""
