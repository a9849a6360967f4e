"""Word lists of the precision guard (``core/guard.py``).

Plain data, grouped by the linguistic rule that uses it. Words are lower-case; the guard
compares them through its own light stemmer, so one form of each word is enough
("refund" covers "refunds", "refunded", "refunding").
"""

from __future__ import annotations


def words(text: str) -> frozenset[str]:
    """The whitespace-separated words of ``text`` (lists below read like prose)."""
    return frozenset(text.split())


#: Multi-word expressions rewritten to one token before anything else, so that a phrasal
#: verb or an expanded abbreviation compares equal to its one-word form.
PHRASES: dict[tuple[str, ...], str] = {
    ("turn", "on"): "enable",
    ("switch", "on"): "enable",
    ("turn", "off"): "disable",
    ("switch", "off"): "disable",
    ("set", "up"): "setup",
    ("log", "in"): "login",
    ("sign", "in"): "login",
    ("log", "on"): "login",
    ("log", "out"): "logout",
    ("sign", "out"): "logout",
    ("log", "off"): "logout",
    ("opt", "in"): "optin",
    ("opt", "out"): "optout",
    ("check", "in"): "checkin",
    ("check", "out"): "checkout",
    ("roll", "back"): "rollback",
    ("roll", "out"): "rollout",
    ("scale", "up"): "scaleup",
    ("scale", "down"): "scaledown",
    ("scale", "out"): "scaleup",
    ("scale", "in"): "scaledown",
    ("back", "up"): "backup",
    ("sign", "up"): "signup",
    ("money", "back"): "refund",
    ("look", "up"): "find",
    ("look", "for"): "find",
    ("search", "for"): "find",
    ("how", "long"): "duration",
    ("how", "much"): "how",
    ("how", "many"): "how",
    ("two", "factor"): "mfa",
    ("multi", "factor"): "mfa",
    ("single", "sign", "on"): "sso",
    ("service", "level", "objective"): "slo",
    ("service", "level", "objectives"): "slo",
    ("service", "level", "agreement"): "sla",
    ("non", "disclosure", "agreement"): "nda",
    ("pull", "request"): "pr",
    ("merge", "request"): "pr",
    ("one", "on", "one"): "1:1",
    ("time", "off"): "vacation",
    ("paid", "time", "off"): "vacation",
    ("annual", "leave"): "vacation",
    ("after", "lunch"): "afternoon",
    ("instead", "of"): "instead",
    ("rather", "than"): "instead",
    ("full", "time"): "fulltime",
    ("part", "time"): "parttime",
    ("on", "call"): "oncall",
    ("e", "mail"): "email",
    ("read", "only"): "readonly",
    ("no", "longer"): "not",
}

#: Abbreviations and spellings mapped to one canonical word.
CANONICAL: dict[str, str] = {
    "k8s": "kubernetes",
    "kube": "kubernetes",
    "prod": "production",
    "dev": "development",
    "env": "environment",
    "db": "database",
    "repo": "repository",
    "docs": "documentation",
    "doc": "documentation",
    "auth": "authentication",
    "authn": "authentication",
    "authz": "authorization",
    "2fa": "mfa",
    "tfa": "mfa",
    "app": "application",
    "apps": "application",
    "admin": "administrator",
    "admins": "administrator",
    "info": "information",
    "org": "organization",
    "organisation": "organization",
    "acct": "account",
    "msg": "message",
    "pwd": "password",
    "passwd": "password",
    "max": "maximum",
    "cert": "certificate",
    "certs": "certificate",
    "config": "configuration",
    "perf": "performance",
    "stats": "statistics",
    "vm": "virtualmachine",
    "mins": "minute",
    "hr": "hour",
    "hrs": "hour",
    "yr": "year",
    "yrs": "year",
    "annually": "annual",
    "yearly": "annual",
    "licence": "license",
    "licences": "license",
    "cancelled": "canceled",
    "cancelling": "canceling",
    "versus": "vs",
    "thru": "through",
    "pls": "please",
    "plz": "please",
    "u": "you",
    "ur": "your",
    "txn": "transaction",
    "qty": "quantity",
    "e-mail": "email",
    "ios": "ios",
    "macos": "mac",
    "osx": "mac",
    "golang": "go",
}

#: Words that frame a request rather than say what it is about: function words, question
#: words, politeness, request verbs and generic document nouns. They never decide a match.
FRAMING: frozenset[str] = words(
    """
    a an the this that these those it its it's i i'm i'd i've i'll me myself we us you
    they them he she him is are was were be been being am do does did doing done have has
    had having can could would should will shall might must may ought
    how what what's whats where when why which who whom whose there here
    please thanks thank kindly hi hello hey
    need needs needed want wants wanted like let lets let's help tell know give get gets got
    getting see seeing seen find found encounter encountered experience experiencing hit
    throw throws threw thrown show shows display view check keep keeps kept always still
    anymore again ever really actually currently already yet maybe possibly just also even
    of for in on at by with to from into onto about per via as than and or but so if then
    because while whether between within across through during among list
    any anything something someone somebody anyone anybody
    step steps guide guides procedure procedures process processes runbook playbook
    instructions instruction documentation tutorial howto way ways method information details
    detail question questions thing things stuff explanation overview reference
    work works working use using used handle handling deal dealing
    data now go going possible able sure okay ok yes one
    """
)

#: Words that negate what follows; contractions ending in "n't" are negators too.
NEGATORS: frozenset[str] = words(
    "not no never none nothing nobody nowhere neither nor cannot without unable"
)

#: Words that report a failure: "not delivered" and "delivery failures" mean the same, and
#: a query about something failing deserves another answer than one about it working.
FAILURE: frozenset[str] = words(
    """
    fail fails failed failing failure failures error errors exception exceptions crash
    crashes crashed crashing broken stuck
    """
)

#: Possessives, by whose thing a query is about: the asker's own, or a third party's.
FIRST_PERSON: frozenset[str] = words("my mine our ours your yours")
THIRD_PERSON: frozenset[str] = words("his her hers their theirs")

#: Words after which a noun phrase fills a directional role.
SOURCE_MARKERS: frozenset[str] = frozenset({"from"})
TARGET_MARKERS: frozenset[str] = frozenset({"to", "into", "onto", "towards", "toward"})
#: "X instead of Y" / "X rather than Y" / "X than Y": Y is the alternative turned down.
ALTERNATIVE_MARKERS: frozenset[str] = frozenset({"instead", "than"})

#: Pairs of opposite actions or directions; each group lists its poles. A query holding one
#: pole where the other holds the other pole asks for the opposite thing.
OPPOSITES: tuple[tuple[frozenset[str], ...], ...] = tuple(
    tuple(words(pole) for pole in group)
    for group in (
        ("enable activate", "disable deactivate"),
        ("refund reimburse credit", "charge bill debit"),
        ("import", "export"),
        ("upload", "download"),
        ("upgrade", "downgrade"),
        (
            "add grant give assign invite include allow allowlist whitelist",
            "remove revoke unassign exclude deny block blocklist blacklist kick",
        ),
        ("create", "delete destroy drop"),
        ("install", "uninstall"),
        ("subscribe", "unsubscribe"),
        ("lock", "unlock"),
        ("approve accept", "reject decline deny"),
        ("start begin resume", "stop end pause halt"),
        ("open", "close"),
        ("connect attach mount", "disconnect detach unmount"),
        ("encrypt encode compress", "decrypt decode decompress"),
        ("increase raise grow expand extend", "decrease lower reduce shrink shorten"),
        ("higher more above over maximum max most", "lower less fewer below under minimum least"),
        ("before earlier earliest", "after later latest"),
        ("first oldest", "last newest latest"),
        ("old", "new"),
        ("buy purchase", "sell"),
        ("deposit", "withdraw"),
        ("send", "receive"),
        ("incoming inbound", "outgoing outbound"),
        ("input", "output"),
        ("push", "pull"),
        ("rollout deploy release", "rollback"),
        ("publish", "unpublish"),
        ("archive", "unarchive restore"),
        ("login", "logout"),
        ("checkin", "checkout"),
        ("optin", "optout"),
        ("onboard onboarding", "offboard offboarding"),
        ("hire", "fire terminate"),
        ("join", "leave"),
        ("discount cheaper cheap", "surcharge pricier expensive"),
        ("faster fast quick", "slower slow"),
        ("public", "private"),
        ("internal", "external"),
        ("domestic local", "international global"),
        ("online", "offline"),
        ("read", "write"),
        ("profit gain", "loss"),
        ("positive", "negative"),
        ("schedule book confirm renew reserve", "cancel"),
        ("merge", "split"),
        ("freeze", "unfreeze"),
        ("mute", "unmute"),
        ("follow", "unfollow"),
        ("pin", "unpin"),
        ("scaleup", "scaledown"),
        ("overpay overcharge", "underpay undercharge"),
        ("arrive arrival", "depart departure"),
        ("enter", "exit"),
        ("agree", "disagree"),
        ("register enroll", "deregister unenroll"),
        ("valid", "invalid"),
        ("available", "unavailable"),
        ("supported", "unsupported"),
        ("ascending", "descending"),
        ("upper", "lower"),
        ("top", "bottom"),
        ("north", "south"),
        ("east", "west"),
        ("long", "short"),
        ("big large", "small"),
        ("full", "partial empty"),
        ("employer", "employee"),
        ("buyer", "seller"),
        ("sender", "recipient receiver"),
    )
)

#: Prefix swaps that turn a word into its opposite ("import"/"export", "enable"/"disable").
SWAP_PREFIXES: tuple[tuple[str, str], ...] = (
    ("en", "de"),
    ("en", "dis"),
    ("up", "down"),
    ("in", "out"),
    ("in", "ex"),
    ("im", "ex"),
    ("in", "de"),
    ("on", "off"),
    ("over", "under"),
    ("pre", "post"),
    ("inter", "intra"),
    ("max", "min"),
    ("ac", "de"),
)

#: Prefixes that negate the word they are put before ("supported"/"unsupported").
NEGATING_PREFIXES: tuple[str, ...] = ("un", "in", "im", "il", "ir", "dis", "non", "de", "mis")

#: Groups of mutually exclusive scope words: two queries using different members of one group
#: ask about different populations, periods, tiers or places.
SCOPES: tuple[frozenset[str], ...] = tuple(
    words(group)
    for group in (
        "all every each entire whole only single specific particular individual both either "
        "some most few many several",
        "hourly daily weekly biweekly monthly quarterly semiannual annual",
        "free trial basic starter standard pro professional premium plus business enterprise "
        "growth",
        "production staging development test testing qa sandbox preview",
        "primary replica secondary standby master leader follower",
        "mobile web desktop ios android windows mac linux cli",
        "employee contractor customer administrator manager guest intern partner vendor staff "
        "member owner freelancer fulltime parttime student teacher",
        "domestic international local global regional internal external public private "
        "abroad overseas onsite offsite remote",
        "express standard overnight priority economy expedited",
        "small medium large",
        "hour day week month quarter year",
    )
)

#: Groups of words that may stand for each other. Membership is pairwise, not transitive
#: across groups ("setup" is both "configure" and "create", but those two differ).
SYNONYMS: tuple[frozenset[str], ...] = tuple(
    words(group)
    for group in (
        "setup configure configuration",
        "setup create make",
        "delete remove erase erasure purge wipe",
        "change update modify edit alter adjust",
        "move reschedule shift",
        "book reserve schedule",
        "summary summarize summarise condense recap digest tldr",
        "error exception",
        "refund reimburse",
        "seat user license",
        "plan subscription",
        "rule requirement policy guideline",
        "complexity strength",
        "difference compare comparison vs",
        "meaning mean definition define",
        "retention retain",
        "duration period length",
        "access permission",
        "price pricing cost quote",
        "bug defect",
        "fix resolve solve repair troubleshoot",
        "cancel terminate",
        "buy purchase",
        "employee staff worker",
        "customer client",
        "vacation pto",
        "left remaining remain",
        "revenue income",
        "fast quick",
        "big large",
        "start begin",
        "finish end",
        "photo picture image",
        "invoice bill",
        "agreement contract",
        "request ask",
        "meeting call",
        "certificate cert",
        "hotel accommodation lodging",
        "conference convention",
        "near close nearby",
        "leak expose",
        "verbose debug",
    )
)

#: Operation verbs: a request naming one that the other does not asks for something else.
ACTIONS: frozenset[str] = words(
    """
    cancel delete remove add create reset refund charge update change move book schedule
    export import install uninstall upgrade downgrade deploy rollback rollout restore backup
    migrate promote demote rotate revoke approve reject submit send share transfer pay buy
    sell return exchange replace renew extend merge split publish archive restart stop start
    pause resume enable disable block unblock lock unlock invite kick ban suspend close open
    translate proofread summarize explain compare estimate quote order ship track verify
    encrypt decrypt rename copy clone sync rebuild reinstall retry escalate dispute convert
    """
)

#: Month names (and unambiguous abbreviations) and weekdays, for the date rule.
MONTHS: dict[str, int] = {
    name: number
    for number, names in enumerate(
        (
            "january jan",
            "february feb",
            "march mar",
            "april apr",
            "may",
            "june jun",
            "july jul",
            "august aug",
            "september sep sept",
            "october oct",
            "november nov",
            "december dec",
        ),
        start=1,
    )
    for name in names.split()
}
WEEKDAYS: dict[str, str] = {
    name: day
    for day, names in (
        ("mon", "monday mondays"),
        ("tue", "tuesday tuesdays tues"),
        ("wed", "wednesday wednesdays"),
        ("thu", "thursday thursdays thurs"),
        ("fri", "friday fridays"),
        ("sat", "saturday saturdays"),
        ("sun", "sunday sundays"),
    )
    for name in names.split()
}
#: Single words that pin a date or a time of day.
DAY_WORDS: frozenset[str] = words(
    "today tonight tomorrow yesterday weekend morning afternoon evening night noon midnight "
    "overnight"
)
#: "this / last / next" + a period: "last year", "next week", "this quarter".
RELATIVE: dict[str, str] = {
    "this": "this",
    "current": "this",
    "last": "last",
    "previous": "last",
    "past": "last",
    "prior": "last",
    "next": "next",
    "coming": "next",
    "upcoming": "next",
    "following": "next",
}
PERIODS: frozenset[str] = words(
    "day week weekend month quarter year morning afternoon evening night sprint"
)

#: Number words. "one" and "a" are left out on purpose: both are also articles or pronouns
#: ("refund one of them"), and "a seat" and "one seat" must still agree.
UNITS: dict[str, int] = {
    "zero": 0,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "thirteen": 13,
    "fourteen": 14,
    "fifteen": 15,
    "sixteen": 16,
    "seventeen": 17,
    "eighteen": 18,
    "nineteen": 19,
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fifty": 50,
    "sixty": 60,
    "seventy": 70,
    "eighty": 80,
    "ninety": 90,
    "dozen": 12,
    "twice": 2,
    "double": 2,
    "thrice": 3,
    "triple": 3,
    "third": 3,
    "fourth": 4,
    "fifth": 5,
    "sixth": 6,
    "seventh": 7,
    "eighth": 8,
    "ninth": 9,
    "tenth": 10,
    "eleventh": 11,
    "twelfth": 12,
}
SCALES: dict[str, int] = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9}
#: Suffixes that scale a number written with digits ("10k", "2.5m").
MULTIPLIERS: dict[str, int] = {"k": 1000, "m": 10**6, "b": 10**9}
#: Unit suffixes glued to digits ("10TB", "30min"); the unit becomes a word of its own.
UNIT_SUFFIXES: frozenset[str] = words(
    "tb gb mb kb pb b ms s sec secs min mins h hr hrs d x px pt kg g km mi"
)
