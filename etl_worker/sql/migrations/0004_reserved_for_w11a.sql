-- Placeholder: number 0004 belongs to another helper's branch. It exists only so this
-- branch's 0008 loads without a gap; drop this file when the real 0004 lands.
SELECT 1;
