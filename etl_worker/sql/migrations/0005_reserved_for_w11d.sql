-- Reserved for w11d's migration (pre-assigned number 5): a placeholder so 0006 loads
-- without a gap on this branch. Dropped (or replaced by w11d's file) at merge.
SELECT 1;
