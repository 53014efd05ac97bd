-- passby: the bridge's PostgreSQL role and database. Idempotent. Run as the postgres user:
--   runuser -u postgres -- psql -v ON_ERROR_STOP=1 -f passby.sql
-- The role has no password: the bridge (OS user passby) connects over the local socket with
-- peer authentication (Debian's default pg_hba.conf). For a remote bridge, set a password
-- (ALTER ROLE passby PASSWORD '...') and allow its address with scram-sha-256 in pg_hba.conf.
SELECT 'CREATE ROLE passby LOGIN'
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'passby')\gexec
SELECT 'CREATE DATABASE passby OWNER passby ENCODING ''UTF8'' LC_COLLATE ''C'' LC_CTYPE ''C'' TEMPLATE template0'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'passby')\gexec
REVOKE ALL ON DATABASE passby FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE passby TO passby;
