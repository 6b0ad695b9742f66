-- Placeholder: number 4 is w11a's migration (locks, fences, cancel). It exists only so this
-- branch's 0005 loads without a gap; drop this file when w11a's 0004 lands.
SELECT 1;
