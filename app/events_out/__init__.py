"""Outbound events: webhooks and MQTT, fed by their own consumer groups on the firehose."""
