"""行政协助 (administrative assistance): requests between departments by the 编办's list,
their answers, 否定报备, 督查 and 互评 (domain brief §7, issue 15 §1)."""
