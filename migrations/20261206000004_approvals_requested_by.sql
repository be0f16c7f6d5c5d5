-- Who asked for a held call (a person's id, when a person recorded it): that
-- person may not decide its approval, so a risky action always has a second
-- pair of eyes.
ALTER TABLE approvals ADD COLUMN requested_by uuid;
