"""The bridge's schema, written once as SQLAlchemy Core tables (what the migrations build).

The migrations in ``storage/migrations/versions/`` are the history; this is the result, and
``tests/test_migrations.py`` checks that the two agree on both engines (Alembic's
``compare_metadata`` after upgrading to head finds no difference). A new migration changes
this file in the same commit. Types are SQLite's storage classes (INTEGER, REAL, TEXT, BLOB);
on PostgreSQL they are bigint, double precision, text and bytea, an integer primary key is an
identity column, and ``users.username`` uses the ICU collation ``nocase``.
The view ``returns`` (migration 7) is not a table and is not described here.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    ForeignKey,
    Identity,
    Index,
    LargeBinary,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.types import TypeEngine

from cloud_bridge.offers.policy import CAP_COUNT, CAP_DAYS, SEND_END, SEND_START

__all__ = ["metadata"]

INT: TypeEngine[int] = BigInteger().with_variant(sqlite.INTEGER(), "sqlite")
REAL: TypeEngine[float] = Double().with_variant(sqlite.REAL(), "sqlite")
BLOB: TypeEngine[bytes] = LargeBinary().with_variant(sqlite.BLOB(), "sqlite")

metadata = MetaData()

schema_migrations = Table(
    "schema_migrations",
    metadata,
    Column("version", INT, Identity(), primary_key=True),
    Column("applied", REAL),
)

stores = Table(
    "stores",
    metadata,
    Column("id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("timezone", Text, nullable=False),
    Column("country", Text, nullable=False),
    Column("sender_name", Text, nullable=False),
    Column("send_start", Text, nullable=False, server_default=SEND_START),
    Column("send_end", Text, nullable=False, server_default=SEND_END),
    Column("site_key", Text, nullable=False),
    Column("roster_version", INT, nullable=False, server_default=text("0")),
    Column("daily_budget", INT),
)

sensors = Table(
    "sensors",
    metadata,
    Column("store_id", Text, primary_key=True),
    Column("sensor_id", Text, primary_key=True),
    Column("state", Text),
    Column("agent_version", Text),
    Column("roster_version", INT),
    Column("last_seen", REAL),
    Column("last_stats", Text),
)

customers = Table(
    "customers",
    metadata,
    Column("id", INT, Identity(), primary_key=True),
    Column("crm_id", Text, nullable=False),
    Column("subject", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("phone", Text, nullable=False),
    Column("favourite_product", Text),
    Column("created", REAL, nullable=False),
    Column("first_purchase", Text),
    Column("visits", INT),
    Column("loyalty_tier", Text),
    Column("source", Text),
    Column("erased", REAL),
    UniqueConstraint("crm_id"),
    UniqueConstraint("subject"),
    Index("customers_erased", "erased"),
    Index("customers_phone", "phone"),
)

consents = Table(
    "consents",
    metadata,
    Column("id", INT, Identity(), primary_key=True),
    Column("customer_id", INT, ForeignKey("customers.id"), nullable=False),
    Column("kind", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("text_version", Text),
    Column("proof", Text),
    Column("ts", REAL, nullable=False),
    Index("consents_customer", "customer_id", "kind", "ts"),
    Index("consents_revoked", "kind", "status", "ts"),
)

campaigns = Table(
    "campaigns",
    metadata,
    Column("id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("trigger", Text, nullable=False),
    Column("template", Text, nullable=False),
    Column("stores", Text, nullable=False, server_default="[]"),
    Column("status", Text, nullable=False, server_default="active"),
    Column("cap_count", INT, nullable=False, server_default=text(str(CAP_COUNT))),
    Column("cap_days", INT, nullable=False, server_default=text(str(CAP_DAYS))),
    Column("priority", INT, nullable=False, server_default=text("0")),
    Column("variants", Text, nullable=False, server_default="[]"),
    Column("holdout_pct", REAL, nullable=False, server_default=text("0")),
    Column("budget", INT),
    Column("audience", Text, nullable=False, server_default="{}"),
    Column("schedule", Text, nullable=False, server_default="{}"),
    Column("min_dwell_s", REAL, nullable=False, server_default=text("0")),
    Column("min_rssi", REAL),
    Column("rssi_stat", Text, nullable=False, server_default="median"),
    Column("source", Text),
    Column("created", REAL),
    Column("updated", REAL),
    Column("paused_reason", Text),
    Column("paused_at", REAL),
)

events = Table(
    "events",
    metadata,
    Column("event_id", Text, primary_key=True),
    Column("store_id", Text, nullable=False),
    Column("sensor_id", Text, nullable=False),
    Column("type", Text, nullable=False),
    Column("subject", Text, nullable=False),
    Column("ts", REAL, nullable=False),
    Column("payload", Text, nullable=False),
    Column("received", REAL, nullable=False),
    Column("state", Text, nullable=False, server_default="new"),
    Index("events_state", "state", "received"),
    Index("events_store_type_ts", "store_id", "type", "ts"),
    Index("events_subject", "subject", "type", "ts"),
    Index("events_type_received", "type", "received"),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", INT, Identity(), primary_key=True),
    Column("topic", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("payload_sha256", Text, nullable=False),
    Column("payload_bytes", INT, nullable=False),
    Column("received", REAL, nullable=False),
)

decisions = Table(
    "decisions",
    metadata,
    Column("id", INT, Identity(), primary_key=True),
    Column("event_id", Text, nullable=False),
    Column("customer_id", INT),
    Column("campaign_id", Text),
    Column("outcome", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("detail", Text, nullable=False),
    Column("ts", REAL, nullable=False),
    Column("variant", Text),
    Column("holdout", INT, nullable=False, server_default=text("0")),
    Column("store_id", Text),
    Column("segment", Text),
    Column("checks", Text),
    Index("decisions_campaign", "campaign_id", "outcome"),
    Index("decisions_customer", "customer_id", "outcome", "campaign_id", "ts"),
    Index("decisions_event", "event_id"),
    Index("decisions_store", "store_id", "id"),
    Index("decisions_ts", "ts"),
)

sends = Table(
    "sends",
    metadata,
    Column("id", INT, Identity(), primary_key=True),
    Column("decision_id", INT, ForeignKey("decisions.id"), nullable=False),
    Column("customer_id", INT, nullable=False),
    Column("campaign_id", Text, nullable=False),
    Column("store_id", Text, nullable=False),
    Column("ts", REAL, nullable=False),
    Column("state", Text, nullable=False),
    Column("provider", Text, nullable=False),
    Column("provider_id", Text),
    Column("error", Text),
    Column("sender", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("idem_key", Text),
    Column("attempts", INT, nullable=False, server_default=text("0")),
    Column("expires_at", REAL),
    Column("next_at", REAL),
    Column("lease_until", REAL),
    Column("attempt_at", REAL),
    Column("encoding", Text),
    Column("parts", INT),
    Column("cost", REAL),
    Column("currency", Text),
    Column("language", Text),
    Column("updated", REAL),
    Column("accepted_at", REAL),
    Column("final_at", REAL),
    Column("variant", Text),
    UniqueConstraint("decision_id"),
    Index("sends_campaign", "campaign_id", "state"),
    Index("sends_campaign_ts", "campaign_id", "ts"),
    Index("sends_customer", "customer_id", "campaign_id", "ts"),
    Index("sends_idem_key", "idem_key", unique=True),
    Index("sends_provider_id", "provider", "provider_id"),
    Index("sends_state_next", "state", "next_at"),
    Index("sends_store", "store_id", "ts"),
)

sandbox_messages = Table(
    "sandbox_messages",
    metadata,
    Column("id", INT, Identity(), primary_key=True),
    Column("sid", Text, nullable=False),
    Column("to_phone", Text, nullable=False),
    Column("sender", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("ts", REAL, nullable=False),
    UniqueConstraint("sid"),
)

devices = Table(
    "devices",
    metadata,
    Column("id", INT, Identity(), primary_key=True),
    Column("customer_id", INT, ForeignKey("customers.id"), nullable=False),
    Column("mac_hmac", Text, nullable=False),
    Column("mac_enc", BLOB, nullable=False),
    Column("first_seen", REAL, nullable=False),
    Column("last_seen", REAL, nullable=False),
    Column("expires", REAL),
    Column("source", Text, nullable=False, server_default="import"),
    Column("store_id", Text),
    UniqueConstraint("customer_id", "mac_hmac"),
    Index("devices_mac", "mac_hmac"),
)

enrolments = Table(
    "enrolments",
    metadata,
    Column("id", Text, primary_key=True),
    Column("store_id", Text, nullable=False),
    Column("phone", Text, nullable=False),
    Column("phone_hmac", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("crm_id", Text),
    Column("language", Text, nullable=False),
    Column("consent_sms", INT, nullable=False),
    Column("consent_recognition", INT, nullable=False),
    Column("text_version", Text, nullable=False),
    Column("text_sha256", Text, nullable=False),
    Column("mac_hmac", Text),
    Column("mac_enc", BLOB),
    Column("source", Text, nullable=False),
    Column("ip", Text),
    Column("user_agent", Text),
    Column("code_hash", Text),
    Column("code_message_id", Text),
    Column("attempts", INT, nullable=False, server_default=text("0")),
    Column("status", Text, nullable=False),
    Column("created", REAL, nullable=False),
    Column("expires", REAL, nullable=False),
    Column("confirmed", REAL),
    Column("customer_id", INT),
    Index("enrolments_ip", "ip", "created"),
    Index("enrolments_phone", "phone_hmac", "created"),
)

suppressions = Table(
    "suppressions",
    metadata,
    Column("id", INT, Identity(), primary_key=True),
    Column("kind", Text, nullable=False),
    Column("hmac", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("ts", REAL, nullable=False),
    UniqueConstraint("kind", "hmac"),
)

bridge_meta = Table(
    "bridge_meta",
    metadata,
    Column("name", Text, primary_key=True),
    Column("value", Text, nullable=False),
)

sensor_credentials = Table(
    "sensor_credentials",
    metadata,
    Column("store_id", Text, primary_key=True),
    Column("sensor_id", Text, primary_key=True),
    Column("mqtt_username", Text, nullable=False),
    Column("mqtt_password_hash", Text, nullable=False),
    Column("token_id", Text, nullable=False),
    Column("token_sha256", Text, nullable=False),
    Column("channel", INT),
    Column("created", REAL, nullable=False),
    Column("rotated", REAL),
    Column("revoked", REAL),
    UniqueConstraint("mqtt_username"),
    UniqueConstraint("token_id"),
)

pairing_codes = Table(
    "pairing_codes",
    metadata,
    Column("code_hash", Text, primary_key=True),
    Column("store_id", Text, nullable=False),
    Column("sensor_id", Text, nullable=False),
    Column("sealed", BLOB),
    Column("created", REAL, nullable=False),
    Column("expires", REAL, nullable=False),
    Column("used", REAL),
    Column("used_by", Text),
    Index("pairing_codes_sensor", "store_id", "sensor_id"),
)

replies = Table(
    "replies",
    metadata,
    Column("id", INT, Identity(), primary_key=True),
    Column("idem_key", Text, nullable=False),
    Column("customer_id", INT, nullable=False),
    Column("action", Text, nullable=False),
    Column("ts", REAL, nullable=False),
    Column("state", Text, nullable=False),
    Column("provider", Text, nullable=False),
    Column("provider_id", Text),
    Column("error", Text),
    Column("sender", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("attempts", INT, nullable=False, server_default=text("0")),
    Column("expires_at", REAL),
    Column("next_at", REAL),
    Column("lease_until", REAL),
    Column("attempt_at", REAL),
    Column("encoding", Text),
    Column("parts", INT),
    Column("cost", REAL),
    Column("currency", Text),
    Column("language", Text),
    Column("updated", REAL),
    Column("accepted_at", REAL),
    Column("final_at", REAL),
    UniqueConstraint("idem_key"),
    Index("replies_provider_id", "provider", "provider_id"),
    Index("replies_state_next", "state", "next_at"),
)

send_log = Table(
    "send_log",
    metadata,
    Column("id", INT, Identity(), primary_key=True),
    Column("kind", Text, nullable=False),
    Column("send_id", INT, nullable=False),
    Column("ts", REAL, nullable=False),
    Column("state", Text, nullable=False),
    Column("detail", Text, nullable=False, server_default=""),
    Index("send_log_send", "kind", "send_id"),
)

optout_links = Table(
    "optout_links",
    metadata,
    Column("token", Text, primary_key=True),
    Column("customer_id", INT, nullable=False),
    Column("send_id", INT),
    Column("created", REAL, nullable=False),
    Column("used", REAL),
    Index("optout_links_send", "send_id"),
)

inbound_messages = Table(
    "inbound_messages",
    metadata,
    Column("id", INT, Identity(), primary_key=True),
    Column("provider", Text, nullable=False),
    Column("message_id", Text, nullable=False),
    Column("phone_hmac", Text),
    Column("keyword", Text),
    Column("action", Text),
    Column("customers", INT, nullable=False, server_default=text("0")),
    Column("received", REAL, nullable=False),
    UniqueConstraint("provider", "message_id"),
)

delivery_receipts = Table(
    "delivery_receipts",
    metadata,
    Column("id", INT, Identity(), primary_key=True),
    Column("provider", Text, nullable=False),
    Column("provider_id", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("error", Text),
    Column("received", REAL, nullable=False),
    UniqueConstraint("provider", "provider_id", "status"),
)

number_flags = Table(
    "number_flags",
    metadata,
    Column("customer_id", INT, Identity(), primary_key=True),
    Column("reason", Text, nullable=False),
    Column("code", Text),
    Column("ts", REAL, nullable=False),
)

purchases = Table(
    "purchases",
    metadata,
    Column("id", INT, Identity(), primary_key=True),
    Column("ref", Text, nullable=False),
    Column("customer_id", INT, nullable=False),
    Column("store_id", Text),
    Column("ts", REAL, nullable=False),
    Column("amount", REAL, nullable=False),
    Column("currency", Text),
    Column("imported", REAL, nullable=False),
    UniqueConstraint("ref"),
    Index("purchases_customer", "customer_id", "ts"),
)

engine_alerts = Table(
    "engine_alerts",
    metadata,
    Column("id", INT, Identity(), primary_key=True),
    Column("kind", Text, nullable=False),
    Column("campaign_id", Text),
    Column("detail", Text, nullable=False),
    Column("ts", REAL, nullable=False),
)

users = Table(
    "users",
    metadata,
    Column("id", INT, Identity(), primary_key=True),
    Column("username", Text(collation="nocase"), nullable=False),
    Column("role", Text, nullable=False),
    Column("password_hash", Text, nullable=False),
    Column("phone", Text),
    Column("created", REAL, nullable=False),
    Column("disabled", REAL),
    Column("last_login", REAL),
    Column("password_changed", REAL),
    UniqueConstraint("username"),
)

user_stores = Table(
    "user_stores",
    metadata,
    Column("user_id", INT, ForeignKey("users.id"), primary_key=True),
    Column("store_id", Text, primary_key=True),
)

sessions = Table(
    "sessions",
    metadata,
    Column("id_sha256", Text, primary_key=True),
    Column("user_id", INT, ForeignKey("users.id"), nullable=False),
    Column("csrf", Text, nullable=False),
    Column("created", REAL, nullable=False),
    Column("expires", REAL, nullable=False),
    Column("last_seen", REAL, nullable=False),
    Column("ip", Text),
    Column("user_agent", Text),
    Index("sessions_user", "user_id"),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Text, primary_key=True),
    Column("user_id", INT, ForeignKey("users.id"), nullable=False),
    Column("name", Text, nullable=False),
    Column("token_sha256", Text, nullable=False),
    Column("created", REAL, nullable=False),
    Column("last_used", REAL),
    Column("revoked", REAL),
)

login_attempts = Table(
    "login_attempts",
    metadata,
    Column("id", INT, Identity(), primary_key=True),
    Column("username", Text, nullable=False),
    Column("ip", Text),
    Column("ts", REAL, nullable=False),
    Column("ok", INT, nullable=False),
    Index("login_attempts_ip", "ip", "ts"),
    Index("login_attempts_user", "username", "ts"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", INT, Identity(), primary_key=True),
    Column("ts", REAL, nullable=False),
    Column("actor", Text, nullable=False),
    Column("role", Text),
    Column("action", Text, nullable=False),
    Column("target", Text, nullable=False, server_default=""),
    Column("detail", Text, nullable=False, server_default=""),
    Column("ip", Text),
    Index("audit_log_ts", "ts"),
)

sensor_stats = Table(
    "sensor_stats",
    metadata,
    Column("id", INT, Identity(), primary_key=True),
    Column("store_id", Text, nullable=False),
    Column("sensor_id", Text, nullable=False),
    Column("received", REAL, nullable=False),
    Column("ts", REAL, nullable=False),
    Column("frames", INT),
    Column("frames_per_s", REAL),
    Column("client_frames", INT),
    Column("matched", INT),
    Column("malformed", INT),
    Column("outbox_depth", INT),
    Column("dropped", INT),
    Column("roster_version", INT),
    Column("channel", INT),
    Column("iface_state", Text),
    Column("cpu_temp_c", REAL),
    Column("disk_free_mb", REAL),
    Column("uptime_s", REAL),
    Index("sensor_stats_sensor", "store_id", "sensor_id", "received"),
)

footfall_hours = Table(
    "footfall_hours",
    metadata,
    Column("store_id", Text, primary_key=True),
    Column("sensor_id", Text, primary_key=True),
    Column("hour", REAL, primary_key=True),
    Column("unique_devices", INT, nullable=False),
    Column("visitors", INT, nullable=False),
    Column("passers_by", INT, nullable=False),
)

report_marks = Table(
    "report_marks",
    metadata,
    Column("name", Text, primary_key=True),
    Column("value", REAL, nullable=False),
)

report_event_days = Table(
    "report_event_days",
    metadata,
    Column("store_id", Text, nullable=False),
    Column("day", INT, nullable=False),
    Column("type", Text, nullable=False),
    Column("n", INT, nullable=False),
    Index("report_event_days_day", "day", "store_id"),
)

report_decision_days = Table(
    "report_decision_days",
    metadata,
    Column("day", INT, nullable=False),
    Column("store_id", Text, nullable=False),
    Column("campaign_id", Text),
    Column("variant", Text),
    Column("outcome", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("n", INT, nullable=False),
    Index("report_decision_days_day", "day", "store_id"),
)

report_send_days = Table(
    "report_send_days",
    metadata,
    Column("day", INT, nullable=False),
    Column("store_id", Text, nullable=False),
    Column("campaign_id", Text),
    Column("variant", Text),
    Column("state", Text, nullable=False),
    Column("n", INT, nullable=False),
    Index("report_send_days_day", "day", "store_id"),
)

report_exposures = Table(
    "report_exposures",
    metadata,
    Column("return_days", INT, primary_key=True),
    Column("decision_id", INT, primary_key=True),
    Column("day", INT, nullable=False),
    Column("ts", REAL, nullable=False),
    Column("store_id", Text),
    Column("campaign_id", Text),
    Column("variant", Text),
    Column("holdout", INT, nullable=False),
    Column("counted", INT, nullable=False),
    Column("returned", INT, nullable=False),
    Column("revenue", REAL, nullable=False),
    Column("cost", REAL, nullable=False),
    Index("report_exposures_ts", "return_days", "ts"),
)

report_exposure_days = Table(
    "report_exposure_days",
    metadata,
    Column("return_days", INT, nullable=False),
    Column("day", INT, nullable=False),
    Column("store_id", Text),
    Column("campaign_id", Text),
    Column("variant", Text),
    Column("holdout", INT, nullable=False),
    Column("n", INT, nullable=False),
    Column("returns", INT, nullable=False),
    Column("revenue", REAL, nullable=False),
    Column("cost", REAL, nullable=False),
    Index("report_exposure_days_day", "return_days", "day", "store_id"),
)
