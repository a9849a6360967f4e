"""The catalogue of specialised agents the service selects from."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> set[str]:
    """Lower-case words of three letters or more: the unit of keyword matching."""
    return {word for word in _WORD.findall(text.lower()) if len(word) >= 3}


@dataclass(frozen=True)
class Agent:
    """One specialised agent: what it is called, what it does and its skills."""

    id: str
    name: str
    description: str
    skills: tuple[str, ...]

    @property
    def profile(self) -> str:
        """The text that is embedded to match tasks against this agent."""
        return f"{self.name}. {self.description} Skills: {', '.join(self.skills)}."

    @cached_property
    def keywords(self) -> frozenset[str]:
        return frozenset(words(" ".join(self.skills)))

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "skills": list(self.skills),
        }


AGENTS: tuple[Agent, ...] = (
    Agent(
        "billing-specialist",
        "Billing Specialist",
        "Explains invoices and charges, issues refunds and updates payment methods.",
        ("invoices", "refunds", "payment methods", "subscriptions", "charges"),
    ),
    Agent(
        "shipping-tracker",
        "Shipping Tracker",
        "Tracks parcels, explains delivery times and arranges redelivery or pickup.",
        ("shipping", "parcel tracking", "delivery", "couriers", "customs"),
    ),
    Agent(
        "returns-coordinator",
        "Returns Coordinator",
        "Handles returns and exchanges, creates return labels and checks warranty cover.",
        ("returns", "exchanges", "return labels", "warranty", "damaged items"),
    ),
    Agent(
        "account-access",
        "Account Access Helper",
        "Gets people back into their accounts: password resets, MFA devices, lockouts.",
        ("password reset", "login", "mfa", "locked account", "single sign-on"),
    ),
    Agent(
        "security-analyst",
        "Security Analyst",
        "Triages phishing reports, suspicious sign-ins and other security incidents.",
        ("phishing", "suspicious activity", "incident triage", "vulnerabilities", "malware"),
    ),
    Agent(
        "hr-assistant",
        "HR Assistant",
        "Answers questions about leave, benefits, workplace policies and employee records.",
        ("annual leave", "benefits", "hr policies", "parental leave", "sick leave"),
    ),
    Agent(
        "payroll-advisor",
        "Payroll Advisor",
        "Explains payslips, tax withholding, expense reimbursement and bonus payments.",
        ("payslips", "tax withholding", "expenses", "bonuses", "salary"),
    ),
    Agent(
        "recruiting-coordinator",
        "Recruiting Coordinator",
        "Drafts job postings, schedules interviews and tracks candidates through hiring.",
        ("job postings", "interview scheduling", "candidates", "offers", "hiring"),
    ),
    Agent(
        "sales-researcher",
        "Sales Researcher",
        "Researches prospects and companies and drafts personalised outreach for sales.",
        ("lead research", "company profiles", "outreach", "prospects", "crm"),
    ),
    Agent(
        "quote-builder",
        "Quote Builder",
        "Prepares price quotes, applies approved discounts and drafts order forms.",
        ("pricing", "quotes", "discounts", "order forms", "licences"),
    ),
    Agent(
        "it-helpdesk",
        "IT Helpdesk",
        "Fixes laptops, VPN, printers and software installs for employees.",
        ("laptops", "vpn", "printers", "software installs", "wifi"),
    ),
    Agent(
        "devops-engineer",
        "DevOps Engineer",
        "Investigates failed deployments, CI pipelines and production incidents.",
        ("deployments", "ci pipelines", "kubernetes", "monitoring", "outages"),
    ),
    Agent(
        "data-analyst",
        "Data Analyst",
        "Writes SQL, builds dashboards and explains metrics and trends in reports.",
        ("sql", "dashboards", "metrics", "reports", "forecasting"),
    ),
    Agent(
        "legal-reviewer",
        "Legal Reviewer",
        "Reviews contracts and NDAs and flags risky clauses and compliance issues.",
        ("contracts", "nda", "compliance", "terms of service", "liability"),
    ),
    Agent(
        "privacy-officer",
        "Privacy Officer",
        "Handles data export and deletion requests, consent and GDPR questions.",
        ("gdpr", "data export", "deletion requests", "consent", "data retention"),
    ),
    Agent(
        "product-expert",
        "Product Expert",
        "Explains product features, integrations, limits and what is on the roadmap.",
        ("features", "integrations", "api", "roadmap", "plan limits"),
    ),
    Agent(
        "onboarding-guide",
        "Onboarding Guide",
        "Walks new customers through workspace setup, invites and first projects.",
        ("workspace setup", "invites", "first steps", "imports", "training"),
    ),
    Agent(
        "translator",
        "Translator",
        "Translates and localises messages, documents and product text.",
        ("translation", "localisation", "languages", "glossaries", "proofreading"),
    ),
    Agent(
        "writing-assistant",
        "Writing Assistant",
        "Drafts and edits emails, summaries and announcements in the right tone.",
        ("emails", "summaries", "drafting", "editing", "tone"),
    ),
    Agent(
        "travel-planner",
        "Travel Planner",
        "Books flights and hotels within travel policy and handles itinerary changes.",
        ("flights", "hotels", "travel policy", "itineraries", "visas"),
    ),
)
