-- The pipeline's tables as the previous release (git commit b0acc55) created them on sqlite:
-- its metadata (outbound_pipeline/tables.py) through create_all, captured once. Never edit.
CREATE TABLE outbound_audience (
	campaign_key VARCHAR(64) NOT NULL, 
	partition_date VARCHAR(10) NOT NULL, 
	row_key VARCHAR(200) NOT NULL, 
	row_number INTEGER NOT NULL, 
	customer_id VARCHAR(200), 
	phone_raw TEXT, 
	recipient VARCHAR(20), 
	phone_region VARCHAR(3), 
	consent_status VARCHAR(20), 
	consent_updated_at VARCHAR(40), 
	eligible BOOLEAN NOT NULL, 
	reason VARCHAR(200), 
	fields_json TEXT, 
	run_id VARCHAR(64), 
	PRIMARY KEY (campaign_key, partition_date, row_key)
);

CREATE INDEX ix_outbound_audience_recipient ON outbound_audience (campaign_key, partition_date, recipient);

CREATE TABLE outbound_messages (
	campaign_key VARCHAR(64) NOT NULL, 
	partition_date VARCHAR(10) NOT NULL, 
	row_key VARCHAR(200) NOT NULL, 
	customer_id VARCHAR(200), 
	recipient VARCHAR(20) NOT NULL, 
	template_name VARCHAR(200) NOT NULL, 
	language VARCHAR(10) NOT NULL, 
	category VARCHAR(20) NOT NULL, 
	header_params_json TEXT, 
	body_params_json TEXT, 
	preview_text TEXT, 
	rendered BOOLEAN NOT NULL, 
	reason VARCHAR(300), 
	run_id VARCHAR(64), 
	PRIMARY KEY (campaign_key, partition_date, row_key)
);

CREATE INDEX ix_outbound_messages_recipient ON outbound_messages (campaign_key, partition_date, recipient);

CREATE TABLE outbound_deliveries (
	campaign_key VARCHAR(64) NOT NULL, 
	partition_date VARCHAR(10) NOT NULL, 
	delivery_key VARCHAR(220) NOT NULL, 
	row_key VARCHAR(200) NOT NULL, 
	customer_id VARCHAR(200), 
	recipient VARCHAR(20), 
	campaign_id VARCHAR(36), 
	sender VARCHAR(20), 
	limit_scope VARCHAR(120), 
	template_name VARCHAR(200), 
	language VARCHAR(10), 
	category VARCHAR(20), 
	header_params_json TEXT, 
	body_params_json TEXT, 
	status VARCHAR(20) NOT NULL, 
	reason VARCHAR(300), 
	error_code VARCHAR(40), 
	retryable BOOLEAN, 
	message_id VARCHAR(100), 
	message_text TEXT, 
	attempts INTEGER NOT NULL, 
	claim_token VARCHAR(64), 
	claimed_at DATETIME, 
	sent_at DATETIME, 
	attribution_expires_at DATETIME, 
	not_before DATETIME, 
	resend_requested_by VARCHAR(64), 
	run_id VARCHAR(64), 
	updated_at DATETIME, 
	PRIMARY KEY (campaign_key, partition_date, delivery_key)
);

CREATE INDEX ix_outbound_deliveries_row ON outbound_deliveries (campaign_key, partition_date, row_key);

CREATE INDEX ix_outbound_deliveries_recipient ON outbound_deliveries (recipient, claimed_at);

CREATE INDEX ix_outbound_deliveries_scope ON outbound_deliveries (limit_scope, claimed_at);

CREATE INDEX ix_outbound_deliveries_customer ON outbound_deliveries (campaign_key, partition_date, customer_id);

CREATE INDEX ix_outbound_deliveries_status ON outbound_deliveries (campaign_key, partition_date, status);

CREATE TABLE outbound_daily_stats (
	campaign_key VARCHAR(64) NOT NULL, 
	partition_date VARCHAR(10) NOT NULL, 
	audience_rows INTEGER, 
	eligible INTEGER, 
	rendered INTEGER, 
	sent INTEGER, 
	failed INTEGER, 
	skipped INTEGER, 
	"deferred" INTEGER, 
	unknown INTEGER, 
	pending INTEGER, 
	reasons_json TEXT, 
	first_sent_at DATETIME, 
	last_sent_at DATETIME, 
	send_rate_per_s FLOAT, 
	computed_at DATETIME, 
	run_id VARCHAR(64), 
	PRIMARY KEY (campaign_key, partition_date)
);

CREATE TABLE outbound_send_runs (
	claim_token VARCHAR(64) NOT NULL, 
	run_id VARCHAR(64), 
	campaign_key VARCHAR(64), 
	partition_date VARCHAR(10), 
	host VARCHAR(255), 
	pid INTEGER, 
	started_at DATETIME, 
	heartbeat_at DATETIME, 
	finished_at DATETIME, 
	PRIMARY KEY (claim_token)
);

CREATE TABLE outbound_quota_scopes (
	limit_scope VARCHAR(120) NOT NULL, 
	updated_at DATETIME, 
	PRIMARY KEY (limit_scope)
);

CREATE TABLE outbound_quota_usage (
	limit_scope VARCHAR(120) NOT NULL, 
	hour_start DATETIME NOT NULL, 
	claims INTEGER NOT NULL, 
	last_claim_at DATETIME, 
	PRIMARY KEY (limit_scope, hour_start)
);

CREATE TABLE outbound_sender_pace (
	sender VARCHAR(20) NOT NULL, 
	next_free_slot FLOAT NOT NULL, 
	updated_at DATETIME, 
	PRIMARY KEY (sender)
);

CREATE TABLE outbound_halts (
	scope VARCHAR(120) NOT NULL, 
	reason VARCHAR(300), 
	halted_at DATETIME, 
	until DATETIME, 
	run_id VARCHAR(64), 
	PRIMARY KEY (scope)
);

CREATE TABLE outbound_daily_reasons (
	campaign_key VARCHAR(64) NOT NULL, 
	partition_date VARCHAR(10) NOT NULL, 
	status VARCHAR(20) NOT NULL, 
	reason VARCHAR(300) NOT NULL, 
	row_count INTEGER NOT NULL, 
	computed_at DATETIME, 
	run_id VARCHAR(64), 
	PRIMARY KEY (campaign_key, partition_date, status, reason)
);

CREATE TABLE outbound_dry_runs (
	campaign_key VARCHAR(64) NOT NULL, 
	partition_date VARCHAR(10) NOT NULL, 
	delivery_key VARCHAR(220) NOT NULL, 
	row_key VARCHAR(200) NOT NULL, 
	customer_id VARCHAR(200), 
	recipient VARCHAR(20), 
	outcome VARCHAR(20) NOT NULL, 
	reason VARCHAR(300), 
	not_before DATETIME, 
	template_name VARCHAR(200), 
	language VARCHAR(10), 
	preview_text TEXT, 
	run_id VARCHAR(64), 
	dry_run_at DATETIME, 
	PRIMARY KEY (campaign_key, partition_date, delivery_key)
);

CREATE TABLE outbound_test_sends (
	run_id VARCHAR(64) NOT NULL, 
	campaign_key VARCHAR(64) NOT NULL, 
	recipient VARCHAR(20) NOT NULL, 
	campaign_id VARCHAR(36), 
	sender VARCHAR(20), 
	template_name VARCHAR(200), 
	language VARCHAR(10), 
	status VARCHAR(20) NOT NULL, 
	reason VARCHAR(300), 
	error_code VARCHAR(40), 
	message_id VARCHAR(100), 
	message_text TEXT, 
	parameters_from VARCHAR(40), 
	sent_at DATETIME, 
	PRIMARY KEY (run_id, campaign_key, recipient)
);
