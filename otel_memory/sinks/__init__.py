"""Where signals go: the daily log, OTel log records, gauges and histograms."""
