-- Prosody 0.12 (Debian 12) for a pollstation herd carried by the server
-- ([herd] carrier = "xmpp" or "both"). This is the setup tests/herd_xmpp.rs
-- runs against (there generated with loopback ports); copy it to
-- /etc/prosody/conf.d/pollstation.cfg.lua and adapt the host name.
--
--   apt install prosody lua-dbi-sqlite3
--   prosodyctl register hall-a poll.example.org '<password>'   # one per station
--
-- Each station publishes its own feeds to a node of its own account's PEP
-- service, herd/<herd id>/<station id>: only that account can publish there,
-- and the station makes the node's access model a whitelist of the herd's
-- other stations (members), so only they can read it. No node has to be made
-- by hand and no station needs to be a server admin.

-- SQL storage: the default file store rewrites a whole node on every
-- publish (about 10 items/s); SQLite keeps up with a herd.
storage = "sql"
sql = { driver = "SQLite3"; database = "prosody.sqlite" }

-- PEP nodes keep at most this many items; a station asks for 10,000 (each
-- item is a batch of up to 256 events: 2.5 million events per station).
-- Prosody's default is 256, which would drop the oldest batches of a long
-- event and make a late station's catch-up incomplete.
pep_max_items = 10000

modules_enabled = {
	"roster"; "saslauth"; "tls"; "disco"; "ping"; "posix";
	"pep";      -- the herd's nodes
}

-- Stations log in with SASL over STARTTLS; give Prosody a real certificate
-- (prosodyctl cert import /etc/letsencrypt/live) or the stations' [xmpp]
-- tls = "required" refuses it.
c2s_require_encryption = true

VirtualHost "poll.example.org"

-- The votes' results nodes ([xmpp] pubsub = "pubsub.poll.example.org"):
-- every station of the herd publishes its votes to the same vote/<poll>
-- nodes. Prosody 0.12 lets only admins make nodes there, and an admin owns
-- every node of the component, so the herd's stations are made admins of
-- this component only (not of the VirtualHost): the herd's own nodes stay
-- on each station's PEP, where only that station publishes.
Component "pubsub.poll.example.org" "pubsub"
	autocreate_on_publish = false
	pubsub_max_items = 10000
	admins = { "hall-a@poll.example.org"; "hall-b@poll.example.org"; "hall-c@poll.example.org" }
