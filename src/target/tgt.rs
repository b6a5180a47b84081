//! tgt through tgtadm.
