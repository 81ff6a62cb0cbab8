-- How many operator retries have re-run the order's site-agent steps. The
-- count is part of those steps' correlation keys, so a retry makes the
-- agent power-cycle and netboot the node again instead of replaying the
-- recorded failure; a task handed out again within one retry keeps its key
-- and stays deduplicated.
ALTER TABLE orders ADD COLUMN agent_retries INTEGER NOT NULL DEFAULT 0;
