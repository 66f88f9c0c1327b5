-- The pipeline's tables as the previous release (git commit b0acc55) created them on postgresql:
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

COMMENT ON COLUMN outbound_audience.campaign_key IS 'Campaign slug.';

COMMENT ON COLUMN outbound_audience.partition_date IS 'Campaign day, YYYY-MM-DD.';

COMMENT ON COLUMN outbound_audience.row_key IS 'Stable identity of the audience row: customer, raw phone, occurrence.';

COMMENT ON COLUMN outbound_audience.row_number IS 'Position in the audience query''s result.';

COMMENT ON COLUMN outbound_audience.customer_id IS 'The brand''s customer ID.';

COMMENT ON COLUMN outbound_audience.phone_raw IS 'Phone as the warehouse holds it.';

COMMENT ON COLUMN outbound_audience.recipient IS 'Phone in E.164, when valid.';

COMMENT ON COLUMN outbound_audience.phone_region IS 'Country of the recipient''s number.';

COMMENT ON COLUMN outbound_audience.consent_status IS 'Current consent for the campaign''s category: opted_in, opted_out or none.';

COMMENT ON COLUMN outbound_audience.consent_updated_at IS 'When that consent was last recorded.';

COMMENT ON COLUMN outbound_audience.eligible IS 'True when the row goes on to rendering and sending.';

COMMENT ON COLUMN outbound_audience.reason IS 'Why the row is not eligible (opted_out, no_consent, phone_invalid, duplicate_recipient, ...).';

COMMENT ON COLUMN outbound_audience.fields_json IS 'The audience columns the template variables read, as JSON.';

COMMENT ON COLUMN outbound_audience.run_id IS 'Dagster run that extracted the row.';

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

COMMENT ON COLUMN outbound_messages.campaign_key IS 'Campaign slug.';

COMMENT ON COLUMN outbound_messages.partition_date IS 'Campaign day, YYYY-MM-DD.';

COMMENT ON COLUMN outbound_messages.row_key IS 'The audience row rendered.';

COMMENT ON COLUMN outbound_messages.customer_id IS 'The brand''s customer ID.';

COMMENT ON COLUMN outbound_messages.recipient IS 'Phone in E.164.';

COMMENT ON COLUMN outbound_messages.template_name IS 'WhatsApp template name.';

COMMENT ON COLUMN outbound_messages.language IS 'Template language.';

COMMENT ON COLUMN outbound_messages.category IS 'Template category: MARKETING, UTILITY or AUTHENTICATION.';

COMMENT ON COLUMN outbound_messages.header_params_json IS 'Header parameters, JSON list in placeholder order.';

COMMENT ON COLUMN outbound_messages.body_params_json IS 'Body parameters, JSON list in placeholder order.';

COMMENT ON COLUMN outbound_messages.preview_text IS 'The message as the recipient reads it.';

COMMENT ON COLUMN outbound_messages.rendered IS 'True when the row can be sent; false when a parameter broke a rule.';

COMMENT ON COLUMN outbound_messages.reason IS 'Why the row cannot be sent, naming the variable and the rule.';

COMMENT ON COLUMN outbound_messages.run_id IS 'Dagster run that rendered the row.';

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
	claimed_at TIMESTAMP WITH TIME ZONE, 
	sent_at TIMESTAMP WITH TIME ZONE, 
	attribution_expires_at TIMESTAMP WITH TIME ZONE, 
	not_before TIMESTAMP WITH TIME ZONE, 
	resend_requested_by VARCHAR(64), 
	run_id VARCHAR(64), 
	updated_at TIMESTAMP WITH TIME ZONE, 
	PRIMARY KEY (campaign_key, partition_date, delivery_key)
);

CREATE INDEX ix_outbound_deliveries_row ON outbound_deliveries (campaign_key, partition_date, row_key);

CREATE INDEX ix_outbound_deliveries_recipient ON outbound_deliveries (recipient, claimed_at);

CREATE INDEX ix_outbound_deliveries_scope ON outbound_deliveries (limit_scope, claimed_at);

CREATE INDEX ix_outbound_deliveries_customer ON outbound_deliveries (campaign_key, partition_date, customer_id);

CREATE INDEX ix_outbound_deliveries_status ON outbound_deliveries (campaign_key, partition_date, status);

COMMENT ON COLUMN outbound_deliveries.campaign_key IS 'Campaign slug.';

COMMENT ON COLUMN outbound_deliveries.partition_date IS 'Campaign day, YYYY-MM-DD.';

COMMENT ON COLUMN outbound_deliveries.delivery_key IS 'Ledger key: the recipient for a send, ''row:<row_key>'' for a row that is not sent.';

COMMENT ON COLUMN outbound_deliveries.row_key IS 'The audience row this outcome belongs to.';

COMMENT ON COLUMN outbound_deliveries.customer_id IS 'The brand''s customer ID.';

COMMENT ON COLUMN outbound_deliveries.recipient IS 'Phone in E.164 (null when the row had no valid phone).';

COMMENT ON COLUMN outbound_deliveries.campaign_id IS 'iAdvize campaign UUID.';

COMMENT ON COLUMN outbound_deliveries.sender IS 'Sender number, E.164.';

COMMENT ON COLUMN outbound_deliveries.limit_scope IS 'Messaging-limit scope the send counts against.';

COMMENT ON COLUMN outbound_deliveries.template_name IS 'WhatsApp template name.';

COMMENT ON COLUMN outbound_deliveries.language IS 'Template language.';

COMMENT ON COLUMN outbound_deliveries.category IS 'Template category.';

COMMENT ON COLUMN outbound_deliveries.header_params_json IS 'Header parameters sent, JSON list.';

COMMENT ON COLUMN outbound_deliveries.body_params_json IS 'Body parameters sent, JSON list.';

COMMENT ON COLUMN outbound_deliveries.status IS 'pending, sending, sent, failed, skipped, deferred or unknown.';

COMMENT ON COLUMN outbound_deliveries.reason IS 'Why the row has this status.';

COMMENT ON COLUMN outbound_deliveries.error_code IS 'WhatsApp or iAdvize error code of the last failure.';

COMMENT ON COLUMN outbound_deliveries.retryable IS 'True when a later run may try again (deferred rows, temporary failures).';

COMMENT ON COLUMN outbound_deliveries.message_id IS 'iAdvize messageId of the accepted message.';

COMMENT ON COLUMN outbound_deliveries.message_text IS 'messageText iAdvize answered: the rendered message.';

COMMENT ON COLUMN outbound_deliveries.attempts IS 'API calls made for this row, all runs together.';

COMMENT ON COLUMN outbound_deliveries.claim_token IS 'Owner of an in-flight send (run and process).';

COMMENT ON COLUMN outbound_deliveries.claimed_at IS 'When the last send was claimed: the contact time for limits.';

COMMENT ON COLUMN outbound_deliveries.sent_at IS 'When iAdvize accepted the message.';

COMMENT ON COLUMN outbound_deliveries.attribution_expires_at IS 'sent_at + the campaign''s attribution window: replies before it belong to the campaign.';

COMMENT ON COLUMN outbound_deliveries.not_before IS 'A deferred row is not tried again before this time.';

COMMENT ON COLUMN outbound_deliveries.resend_requested_by IS 'Run that explicitly asked to resend an unknown or failed row.';

COMMENT ON COLUMN outbound_deliveries.run_id IS 'Dagster run that last changed the row.';

COMMENT ON COLUMN outbound_deliveries.updated_at IS 'Last change.';

CREATE TABLE outbound_daily_stats (
	campaign_key VARCHAR(64) NOT NULL, 
	partition_date VARCHAR(10) NOT NULL, 
	audience_rows INTEGER, 
	eligible INTEGER, 
	rendered INTEGER, 
	sent INTEGER, 
	failed INTEGER, 
	skipped INTEGER, 
	deferred INTEGER, 
	unknown INTEGER, 
	pending INTEGER, 
	reasons_json TEXT, 
	first_sent_at TIMESTAMP WITH TIME ZONE, 
	last_sent_at TIMESTAMP WITH TIME ZONE, 
	send_rate_per_s FLOAT, 
	computed_at TIMESTAMP WITH TIME ZONE, 
	run_id VARCHAR(64), 
	PRIMARY KEY (campaign_key, partition_date)
);

COMMENT ON COLUMN outbound_daily_stats.campaign_key IS 'Campaign slug.';

COMMENT ON COLUMN outbound_daily_stats.partition_date IS 'Campaign day, YYYY-MM-DD.';

COMMENT ON COLUMN outbound_daily_stats.audience_rows IS 'Rows the audience query returned.';

COMMENT ON COLUMN outbound_daily_stats.eligible IS 'Rows with consent and a valid, unique phone.';

COMMENT ON COLUMN outbound_daily_stats.rendered IS 'Eligible rows whose template rendered within WhatsApp''s rules.';

COMMENT ON COLUMN outbound_daily_stats.sent IS 'Messages accepted by iAdvize.';

COMMENT ON COLUMN outbound_daily_stats.failed IS 'Rows that failed.';

COMMENT ON COLUMN outbound_daily_stats.skipped IS 'Rows not sent on purpose (consent, phone, rendering, duplicates).';

COMMENT ON COLUMN outbound_daily_stats.deferred IS 'Rows left for a later run (limits, quiet hours, temporary errors).';

COMMENT ON COLUMN outbound_daily_stats.unknown IS 'Calls whose outcome is unknown: never resent automatically.';

COMMENT ON COLUMN outbound_daily_stats.pending IS 'Rows not yet resolved (a run is sending or was interrupted).';

COMMENT ON COLUMN outbound_daily_stats.reasons_json IS 'Counts per status and reason, JSON.';

COMMENT ON COLUMN outbound_daily_stats.first_sent_at IS 'First acceptance of the day.';

COMMENT ON COLUMN outbound_daily_stats.last_sent_at IS 'Last acceptance of the day.';

COMMENT ON COLUMN outbound_daily_stats.send_rate_per_s IS 'Accepted messages per second between the first and last send.';

COMMENT ON COLUMN outbound_daily_stats.computed_at IS 'When the report was computed.';

COMMENT ON COLUMN outbound_daily_stats.run_id IS 'Dagster run that computed it.';

CREATE TABLE outbound_send_runs (
	claim_token VARCHAR(64) NOT NULL, 
	run_id VARCHAR(64), 
	campaign_key VARCHAR(64), 
	partition_date VARCHAR(10), 
	host VARCHAR(255), 
	pid INTEGER, 
	started_at TIMESTAMP WITH TIME ZONE, 
	heartbeat_at TIMESTAMP WITH TIME ZONE, 
	finished_at TIMESTAMP WITH TIME ZONE, 
	PRIMARY KEY (claim_token)
);

COMMENT ON COLUMN outbound_send_runs.claim_token IS 'One sending process of one run.';

COMMENT ON COLUMN outbound_send_runs.run_id IS 'Dagster run.';

COMMENT ON COLUMN outbound_send_runs.campaign_key IS 'Campaign slug.';

COMMENT ON COLUMN outbound_send_runs.partition_date IS 'Campaign day.';

COMMENT ON COLUMN outbound_send_runs.host IS 'Host of the sending process.';

COMMENT ON COLUMN outbound_send_runs.pid IS 'Process ID of the sending process.';

COMMENT ON COLUMN outbound_send_runs.started_at IS 'Start of sending.';

COMMENT ON COLUMN outbound_send_runs.heartbeat_at IS 'Last sign of life; a stale heartbeat means the process died.';

COMMENT ON COLUMN outbound_send_runs.finished_at IS 'End of sending, when it ended cleanly.';

CREATE TABLE outbound_quota_scopes (
	limit_scope VARCHAR(120) NOT NULL, 
	updated_at TIMESTAMP WITH TIME ZONE, 
	PRIMARY KEY (limit_scope)
);

COMMENT ON COLUMN outbound_quota_scopes.limit_scope IS 'Messaging-limit scope.';

COMMENT ON COLUMN outbound_quota_scopes.updated_at IS 'Last quota decision.';

CREATE TABLE outbound_quota_usage (
	limit_scope VARCHAR(120) NOT NULL, 
	hour_start TIMESTAMP WITH TIME ZONE NOT NULL, 
	claims INTEGER NOT NULL, 
	last_claim_at TIMESTAMP WITH TIME ZONE, 
	PRIMARY KEY (limit_scope, hour_start)
);

COMMENT ON COLUMN outbound_quota_usage.limit_scope IS 'Messaging-limit scope.';

COMMENT ON COLUMN outbound_quota_usage.hour_start IS 'Start of the hour (UTC) the claims were made in.';

COMMENT ON COLUMN outbound_quota_usage.claims IS 'Rows claimed for sending in the scope in this hour, plus, in the first hour counted, the distinct recipients already contacted in the 24 h before. At least the recipients counted against the messaging limit.';

COMMENT ON COLUMN outbound_quota_usage.last_claim_at IS 'The latest claim counted in this hour: a later contact in the ledger was not counted.';

CREATE TABLE outbound_sender_pace (
	sender VARCHAR(20) NOT NULL, 
	next_free_slot FLOAT NOT NULL, 
	updated_at TIMESTAMP WITH TIME ZONE, 
	PRIMARY KEY (sender)
);

COMMENT ON COLUMN outbound_sender_pace.sender IS 'Sender number, E.164.';

COMMENT ON COLUMN outbound_sender_pace.next_free_slot IS 'Unix time (seconds) from which the sender''s time is free: the slots before it are reserved by claims already made, one per message, 1/max_send_rate apart.';

COMMENT ON COLUMN outbound_sender_pace.updated_at IS 'Last reservation.';

CREATE TABLE outbound_halts (
	scope VARCHAR(120) NOT NULL, 
	reason VARCHAR(300), 
	halted_at TIMESTAMP WITH TIME ZONE, 
	until TIMESTAMP WITH TIME ZONE, 
	run_id VARCHAR(64), 
	PRIMARY KEY (scope)
);

COMMENT ON COLUMN outbound_halts.scope IS '''all'' or ''campaign:<key>''.';

COMMENT ON COLUMN outbound_halts.reason IS 'Why sending stopped (error code and meaning).';

COMMENT ON COLUMN outbound_halts.halted_at IS 'When it stopped.';

COMMENT ON COLUMN outbound_halts.until IS 'When sends may resume by themselves; null: only when an operator clears it.';

COMMENT ON COLUMN outbound_halts.run_id IS 'Run that hit the error.';

CREATE TABLE outbound_daily_reasons (
	campaign_key VARCHAR(64) NOT NULL, 
	partition_date VARCHAR(10) NOT NULL, 
	status VARCHAR(20) NOT NULL, 
	reason VARCHAR(300) NOT NULL, 
	row_count INTEGER NOT NULL, 
	computed_at TIMESTAMP WITH TIME ZONE, 
	run_id VARCHAR(64), 
	PRIMARY KEY (campaign_key, partition_date, status, reason)
);

COMMENT ON COLUMN outbound_daily_reasons.campaign_key IS 'Campaign slug.';

COMMENT ON COLUMN outbound_daily_reasons.partition_date IS 'Campaign day, YYYY-MM-DD.';

COMMENT ON COLUMN outbound_daily_reasons.status IS 'Outcome: sent, failed, skipped, deferred, unknown (or pending, sending).';

COMMENT ON COLUMN outbound_daily_reasons.reason IS 'Why the rows have this status (the ledger''s reason; the status itself when empty).';

COMMENT ON COLUMN outbound_daily_reasons.row_count IS 'Ledger rows of the day with this status and reason.';

COMMENT ON COLUMN outbound_daily_reasons.computed_at IS 'When the report was computed.';

COMMENT ON COLUMN outbound_daily_reasons.run_id IS 'Dagster run that computed it.';

CREATE TABLE outbound_dry_runs (
	campaign_key VARCHAR(64) NOT NULL, 
	partition_date VARCHAR(10) NOT NULL, 
	delivery_key VARCHAR(220) NOT NULL, 
	row_key VARCHAR(200) NOT NULL, 
	customer_id VARCHAR(200), 
	recipient VARCHAR(20), 
	outcome VARCHAR(20) NOT NULL, 
	reason VARCHAR(300), 
	not_before TIMESTAMP WITH TIME ZONE, 
	template_name VARCHAR(200), 
	language VARCHAR(10), 
	preview_text TEXT, 
	run_id VARCHAR(64), 
	dry_run_at TIMESTAMP WITH TIME ZONE, 
	PRIMARY KEY (campaign_key, partition_date, delivery_key)
);

COMMENT ON COLUMN outbound_dry_runs.campaign_key IS 'Campaign slug.';

COMMENT ON COLUMN outbound_dry_runs.partition_date IS 'Campaign day, YYYY-MM-DD.';

COMMENT ON COLUMN outbound_dry_runs.delivery_key IS 'The ledger key the row would have (recipient, or ''row:<row_key>'').';

COMMENT ON COLUMN outbound_dry_runs.row_key IS 'The audience row.';

COMMENT ON COLUMN outbound_dry_runs.customer_id IS 'The brand''s customer ID.';

COMMENT ON COLUMN outbound_dry_runs.recipient IS 'Phone in E.164 (null when the row had no valid phone).';

COMMENT ON COLUMN outbound_dry_runs.outcome IS 'would_send, or what a real run would record now without a call: skipped, deferred, or the row''s final status from an earlier real run (sent, failed, unknown).';

COMMENT ON COLUMN outbound_dry_runs.reason IS 'Why the row would not be sent (same vocabulary as outbound_deliveries.reason).';

COMMENT ON COLUMN outbound_dry_runs.not_before IS 'A deferred row would not be tried before this time.';

COMMENT ON COLUMN outbound_dry_runs.template_name IS 'WhatsApp template name.';

COMMENT ON COLUMN outbound_dry_runs.language IS 'Template language.';

COMMENT ON COLUMN outbound_dry_runs.preview_text IS 'The message the recipient would read.';

COMMENT ON COLUMN outbound_dry_runs.run_id IS 'Dagster run of the dry run.';

COMMENT ON COLUMN outbound_dry_runs.dry_run_at IS 'When the dry run was made.';

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
	sent_at TIMESTAMP WITH TIME ZONE, 
	PRIMARY KEY (run_id, campaign_key, recipient)
);

COMMENT ON COLUMN outbound_test_sends.run_id IS 'Dagster run of the launch checklist (preflight job).';

COMMENT ON COLUMN outbound_test_sends.campaign_key IS 'Campaign slug.';

COMMENT ON COLUMN outbound_test_sends.recipient IS 'A test recipient configured for the campaign (test_recipients), E.164.';

COMMENT ON COLUMN outbound_test_sends.campaign_id IS 'iAdvize campaign UUID.';

COMMENT ON COLUMN outbound_test_sends.sender IS 'Sender number, E.164.';

COMMENT ON COLUMN outbound_test_sends.template_name IS 'WhatsApp template name.';

COMMENT ON COLUMN outbound_test_sends.language IS 'Template language.';

COMMENT ON COLUMN outbound_test_sends.status IS 'sent, failed or unknown: the API''s answer to the test message.';

COMMENT ON COLUMN outbound_test_sends.reason IS 'accepted, or why the test message was refused.';

COMMENT ON COLUMN outbound_test_sends.error_code IS 'WhatsApp or iAdvize error code of a refusal.';

COMMENT ON COLUMN outbound_test_sends.message_id IS 'iAdvize messageId of the accepted test message.';

COMMENT ON COLUMN outbound_test_sends.message_text IS 'messageText iAdvize answered.';

COMMENT ON COLUMN outbound_test_sends.parameters_from IS 'first_eligible_row or sample_values: where the template''s values came from.';

COMMENT ON COLUMN outbound_test_sends.sent_at IS 'When the test message was sent.';
