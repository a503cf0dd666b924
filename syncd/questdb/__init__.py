"""QuestDB tables as a source: readers (HTTP /exec, PG wire), watermark poller, reconcile, backfill."""
