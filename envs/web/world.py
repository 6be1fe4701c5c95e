"""The offline website of a web world: a company's shop and intranet, generated from a seed.

A site is a dict ``url -> {"title": str, "lines": [str, ...]}``. Lines are plain text; a clickable
link is written inline as ``[text](/url)``, and facts as ``Key: value`` lines, so that a reader (the
agent, or the scripted challenger) learns the site by reading it. The pages:

- ``/``: the company's home page (founding year, headquarters, support contacts, section links);
- ``/products``, ``/products?page=N``: the catalogue, 10 products a page sorted by name, with
  previous/next links at the top; ``/products/<slug>``: price, rating, stock, SKU, product manager,
  specifications (below the first screen);
- ``/categories``, ``/categories/<slug>``: each category's products with price and rating, sorted by
  name (so "the cheapest" means reading the whole list);
- ``/staff``, ``/staff?page=N``: the staff directory sorted by last name; ``/staff/<slug>``: title,
  department, manager, email, phone extension, office, joining year, products managed;
- ``/departments``, ``/departments/<slug>``: head, location, extension, members;
- ``/news``, ``/news/<slug>``: dated articles with an author and a featured product.

People link to their manager and department, products to their manager, articles to their author and
product: the links that multi-hop questions follow.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

Site = dict[str, dict[str, Any]]

PER_PAGE = 10
"""Items per catalogue or directory page."""

FIRST_NAMES = (
    "Ada", "Alan", "Amara", "Bianca", "Bruno", "Carmen", "Dara", "Dmitri", "Elena", "Emeka", "Farah",
    "Felix", "Greta", "Hamid", "Hana", "Igor", "Ines", "Jonas", "Kaito", "Keira", "Lars", "Leila",
    "Lucia", "Malik", "Marta", "Nadia", "Nils", "Olga", "Omar", "Paloma", "Quentin", "Rania", "Ravi",
    "Rosa", "Samir", "Selma", "Tariq", "Tessa", "Ugo", "Vera", "Wanda", "Xavier", "Yusra", "Zane",
)
LAST_NAMES = (
    "Abbott", "Achebe", "Bergstrom", "Castillo", "Dimitrov", "Eriksen", "Falk", "Fontaine", "Gallo",
    "Haddad", "Horvath", "Ibarra", "Jensen", "Kaur", "Kowalski", "Lindqvist", "Marsh", "Moreau",
    "Nakamura", "Novak", "Oduya", "Ortega", "Petrov", "Quinlan", "Rahman", "Reyes", "Sato", "Schultz",
    "Tanaka", "Torres", "Umar", "Vidal", "Wagner", "Whitfield", "Yilmaz", "Zamora",
)
COMPANY_PARTS = (("Bright", "North", "Silver", "Cedar", "Harbor", "Summit", "Maple", "Iron", "Copper", "Willow"),
                 ("field", "gate", "brook", "stone", "ridge", "wood", "haven", "point", "vale", "crest"),
                 ("Electronics", "Supply Co.", "Gear", "Devices", "Outfitters"))
CITIES = ("Lisbon", "Rotterdam", "Tallinn", "Porto", "Lyon", "Gdansk", "Bergen", "Valencia", "Leeds",
          "Turin", "Ghent", "Tampere")
OPENING_HOURS = ("Monday to Friday, 9:00 to 17:30", "Monday to Saturday, 8:30 to 18:00",
                 "Every day, 10:00 to 19:00", "Monday to Friday, 8:00 to 16:00")
WINGS = ("North", "South", "East", "West")

EXECUTIVE = "Executive Office"
PRODUCT = "Product Management"
DEPARTMENT_ROLES = {
    "Engineering": ("Software Engineer", "Senior Software Engineer", "Site Reliability Engineer", "QA Engineer"),
    "Sales": ("Account Executive", "Sales Representative", "Key Account Manager"),
    "Marketing": ("Marketing Specialist", "Content Writer", "Brand Manager", "SEO Analyst"),
    "Customer Support": ("Support Agent", "Senior Support Agent", "Support Team Lead"),
    "Finance": ("Accountant", "Financial Analyst", "Payroll Specialist"),
    "Logistics": ("Warehouse Coordinator", "Logistics Planner", "Shipping Clerk"),
    "Design": ("Product Designer", "UX Researcher", "Graphic Designer"),
    "Human Resources": ("HR Generalist", "Recruiter", "HR Business Partner"),
    "Legal": ("Legal Counsel", "Paralegal", "Compliance Officer"),
}
DEPARTMENTS_PER_SITE = 5
"""Departments drawn from ``DEPARTMENT_ROLES``, besides the executive office and product management."""

# category -> (SKU prefix, price range in dollars, brands, [(spec, values, unit)])
CATEGORIES: dict[str, tuple[str, tuple[int, int], tuple[str, ...], tuple[tuple[str, tuple[Any, ...], str], ...]]] = {
    "Laptops": ("LP", (549, 2499), ("Kestrel", "Orbital", "Nimbus", "Halcyon"), (
        ("Screen size", (13.3, 14, 15.6, 16), "inches"), ("Weight", (1.1, 1.3, 1.4, 1.6, 1.9, 2.2), "kg"),
        ("Battery life", (8, 10, 12, 14, 18), "hours"), ("Memory", (8, 16, 32), "GB"))),
    "Monitors": ("MN", (139, 1299), ("Vantage", "Lumen", "Orbital", "Prism"), (
        ("Screen size", (24, 27, 32, 34), "inches"), ("Refresh rate", (60, 75, 120, 144, 165), "Hz"),
        ("Panel", ("IPS", "VA", "OLED"), ""), ("Resolution", ("1920 x 1080", "2560 x 1440", "3840 x 2160"), ""))),
    "Headphones": ("HP", (29, 449), ("Echo", "Halcyon", "Sonora", "Tidal"), (
        ("Type", ("over-ear", "on-ear", "in-ear"), ""), ("Battery life", (20, 24, 30, 40, 50), "hours"),
        ("Noise cancelling", ("Yes", "No"), ""), ("Weight", (45, 180, 240, 265, 310), "g"))),
    "Keyboards": ("KB", (39, 229), ("Forge", "Keystone", "Nimbus", "Tactica"), (
        ("Layout", ("full-size", "tenkeyless", "75%", "60%"), ""), ("Switches", ("linear", "tactile", "clicky"), ""),
        ("Wireless", ("Yes", "No"), ""), ("Weight", (550, 720, 860, 1050), "g"))),
    "Cameras": ("CM", (299, 2899), ("Aperture", "Lumen", "Kestrel", "Prism"), (
        ("Sensor resolution", (20, 24, 26, 33, 45, 61), "MP"), ("Weight", (390, 505, 650, 720), "g"),
        ("Video", ("1080p", "4K", "6K", "8K"), ""), ("Shots per charge", (310, 420, 580, 740), ""))),
    "Phones": ("PH", (179, 1399), ("Orbital", "Tidal", "Vantage", "Zephyr"), (
        ("Screen size", (5.8, 6.1, 6.4, 6.7), "inches"), ("Storage", (64, 128, 256, 512), "GB"),
        ("Battery capacity", (3900, 4300, 4700, 5000), "mAh"), ("Main camera", (12, 48, 50, 108), "MP"))),
    "Tablets": ("TB", (199, 1299), ("Nimbus", "Slate", "Zephyr", "Halcyon"), (
        ("Screen size", (8.3, 10.9, 11, 12.9), "inches"), ("Storage", (64, 128, 256), "GB"),
        ("Weight", (290, 460, 480, 680), "g"), ("Battery life", (9, 10, 12, 14), "hours"))),
    "Speakers": ("SP", (35, 499), ("Echo", "Sonora", "Tidal", "Boom"), (
        ("Power", (10, 20, 30, 40, 60), "W"), ("Battery life", (8, 12, 15, 20, 24), "hours"),
        ("Waterproofing", ("IPX4", "IPX5", "IPX7", "none"), ""), ("Weight", (540, 960, 1200, 2100), "g"))),
}
MODEL_WORDS = ("Aero", "Arc", "Atlas", "Drift", "Flux", "Glide", "Nova", "Pulse", "Quill", "Ridge",
               "Sable", "Strata", "Terra", "Vertex", "Wave", "Zenith", "Crest", "Ember", "Onyx", "Spark")
MODEL_SUFFIXES = ("", "", "", " Pro", " Max", " Lite", " Mini", " Plus")
HEADLINES = ("Introducing the {product}", "The {product} is back in stock", "Price drop on the {product}",
             "Staff pick: the {product}", "Hands-on with the {product}", "Why customers love the {product}",
             "Five tips for the {product}", "The {product} wins a design award")


def slug(text: str) -> str:
    """A URL-safe name: lowercase words joined by hyphens."""
    words = "".join(c.lower() if c.isalnum() else " " for c in text).split()
    return "-".join(words)


def link(text: str, url: str) -> str:
    return f"[{text}]({url})"


def money(cents: int) -> str:
    return f"${cents / 100:,.2f}"


def quantity(value: Any, unit: str) -> str:
    return f"{value} {unit}".strip()


@dataclass
class Department:
    name: str
    floor: int
    wing: str
    extension: int
    head: str = ""
    members: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"/departments/{slug(self.name)}"


@dataclass
class Person:
    first: str
    last: str
    title: str
    department: str
    extension: int
    office: str
    joined: int
    manager: str | None = None
    products: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.first} {self.last}"

    @property
    def url(self) -> str:
        return f"/staff/{slug(self.name)}"


@dataclass
class Product:
    name: str
    category: str
    brand: str
    price: int  # cents
    rating: float
    reviews: int
    sku: str
    stock: int
    warranty: int
    manager: str
    specs: list[tuple[str, str]]

    @property
    def url(self) -> str:
        return f"/products/{slug(self.name)}"


@dataclass
class Article:
    title: str
    published: date
    author: str
    product: str

    @property
    def url(self) -> str:
        return f"/news/{slug(self.title)}"


@dataclass
class Company:
    name: str
    host: str
    founded: int
    city: str
    phone: str
    hours: str
    departments: dict[str, Department]
    people: dict[str, Person]
    products: dict[str, Product]
    articles: list[Article]


# ---------------------------------------------------------------- drawing the company


def _draw_people(rng: random.Random, n: int) -> list[tuple[str, str]]:
    names: set[tuple[str, str]] = set()
    while len(names) < n:
        names.add((rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)))
    return sorted(names)


def _draw_departments(rng: random.Random) -> dict[str, Department]:
    names = [EXECUTIVE, PRODUCT] + sorted(rng.sample(sorted(DEPARTMENT_ROLES), DEPARTMENTS_PER_SITE))
    floors = rng.sample(range(1, 10), len(names))
    extensions = rng.sample(range(900, 1000), len(names))  # 9000-9990: apart from people's 2000-8999
    return {name: Department(name, floor, rng.choice(WINGS), ext * 10)
            for name, floor, ext in zip(names, floors, extensions)}


def _staff(rng: random.Random, departments: dict[str, Department], n_people: int) -> dict[str, Person]:
    """Everyone, with a department, a title and a manager: heads report to the chief executive,
    the other executives too, and everyone else to their department's head."""
    if n_people < 3 * len(departments):
        raise ValueError(f"a web world needs at least {3 * len(departments)} people, got {n_people}")
    names = _draw_people(rng, n_people)
    rng.shuffle(names)
    extensions = iter(rng.sample(range(2000, 9000), n_people))
    order = [EXECUTIVE] * 3 + [PRODUCT] * max(3, n_people // 8)
    others = [d for d in departments if d not in (EXECUTIVE, PRODUCT)]
    order += [others[i % len(others)] for i in range(n_people - len(order))]
    people: dict[str, Person] = {}
    for (first, last), dept_name in zip(names, order):
        dept = departments[dept_name]
        office = f"Room {dept.floor}.{rng.randint(1, 40):02d}"
        person = Person(first, last, "", dept_name, next(extensions), office, rng.randint(2004, 2024))
        people[person.name] = person
        if dept.head:
            dept.members.append(person.name)
        else:
            dept.head = person.name
    ceo = departments[EXECUTIVE].head
    for dept in departments.values():
        head = people[dept.head]
        head.title = "Chief Executive Officer" if dept.name == EXECUTIVE else f"Head of {dept.name}"
        head.manager = None if dept.name == EXECUTIVE else ceo
        roles = (("Chief Financial Officer", "Chief Operating Officer") if dept.name == EXECUTIVE
                 else ("Product Manager", "Senior Product Manager") if dept.name == PRODUCT
                 else DEPARTMENT_ROLES[dept.name])
        for i, member in enumerate(dept.members):
            people[member].title = roles[i % len(roles)] if dept.name == EXECUTIVE else rng.choice(roles)
            people[member].manager = dept.head
    return people


def _products(rng: random.Random, managers: list[Person], n_products: int) -> dict[str, Product]:
    categories = sorted(CATEGORIES)
    products: dict[str, Product] = {}
    skus: set[str] = set()
    while len(products) < n_products:
        category = rng.choice(categories)
        prefix, (low, high), brands, specs = CATEGORIES[category]
        brand = rng.choice(brands)
        name = f"{brand} {rng.choice(MODEL_WORDS)} {rng.randint(2, 99)}{rng.choice(MODEL_SUFFIXES)}"
        sku = f"{prefix}-{rng.randint(10000, 99999)}"
        if name in products or sku in skus:
            continue
        skus.add(sku)
        manager = rng.choice(managers)
        manager.products.append(name)
        products[name] = Product(
            name, category, brand, price=rng.randint(low, high) * 100 + rng.choice((0, 49, 99)),
            rating=rng.randint(25, 50) / 10, reviews=rng.randint(3, 2400), sku=sku,
            stock=rng.randint(0, 250), warranty=rng.choice((1, 2, 3)), manager=manager.name,
            specs=[(key, quantity(rng.choice(values), unit)) for key, values, unit in specs])
    return products


def _articles(rng: random.Random, people: dict[str, Person], products: dict[str, Product], n: int) -> list[Article]:
    featured = rng.sample(sorted(products), min(n, len(products)))
    days = rng.sample(range(730), len(featured))
    authors = sorted(people)
    articles = [Article(rng.choice(HEADLINES).format(product=name), date(2023, 1, 1) + timedelta(days=day),
                        rng.choice(authors), name) for name, day in zip(featured, days)]
    return sorted(articles, key=lambda a: a.published, reverse=True)


def draw_company(seed: int, n_products: int = 88, n_people: int = 48, n_articles: int = 12) -> Company:
    """The company behind a site: everything the pages show, drawn from ``seed``."""
    rng = random.Random(seed)
    prefix, suffix, kind = (rng.choice(part) for part in COMPANY_PARTS)
    departments = _draw_departments(rng)
    people = _staff(rng, departments, n_people)
    managers = [people[n] for n in [departments[PRODUCT].head, *departments[PRODUCT].members]]
    products = _products(rng, managers, n_products)
    return Company(
        name=f"{prefix}{suffix} {kind}", host=f"{prefix}{suffix}.example".lower(),
        founded=rng.randint(1968, 2012), city=rng.choice(CITIES), phone=f"+1 555 01{rng.randint(10, 99)}",
        hours=rng.choice(OPENING_HOURS), departments=departments, people=people, products=products,
        articles=_articles(rng, people, products, n_articles))


# ---------------------------------------------------------------- rendering the pages


def _page(title: str, lines: list[str]) -> dict[str, Any]:
    return {"title": title, "lines": lines}


def _home(c: Company) -> dict[str, Any]:
    return _page(c.name, [
        f"Welcome to {c.name}: electronics for work and play, with the people who choose them.",
        f"Founded: {c.founded}",
        f"Headquarters: {c.city}",
        f"Customer support: support@{c.host}",
        f"Support phone: {c.phone}",
        f"Opening hours: {c.hours}",
        "## Explore",
        f"{link('Product catalogue', '/products')}: every product, sorted by name",
        f"{link('Shop by category', '/categories')}: prices and ratings side by side",
        f"{link('Staff directory', '/staff')}: everyone who works here",
        f"{link('Departments', '/departments')}: who does what, and where",
        f"{link('News', '/news')}: announcements and reviews",
    ])


def _listing(base: str, label: str, rows: list[str], footer: str) -> Site:
    """A paginated listing: ``base`` is page 1, ``base?page=N`` the others, navigation on top."""
    pages: Site = {}
    count = max(1, -(-len(rows) // PER_PAGE))
    for number in range(1, count + 1):
        url = base if number == 1 else f"{base}?page={number}"
        nav = []
        if number > 1:
            nav.append(link("Previous page", base if number == 2 else f"{base}?page={number - 1}"))
        if number < count:
            nav.append(link("Next page", f"{base}?page={number + 1}"))
        first = (number - 1) * PER_PAGE
        chunk = rows[first:first + PER_PAGE]
        header = f"Page {number} of {count}, {label} {first + 1}-{first + len(chunk)} of {len(rows)}"
        lines = [" | ".join([header] + nav), *chunk, footer]
        pages[url] = _page(f"{label.capitalize()}, page {number} of {count}", lines)
    return pages


def _catalogue(c: Company) -> Site:
    rows = [f"{link(p.name, p.url)} — {p.category}" for p in sorted(c.products.values(), key=lambda p: p.name)]
    return _listing("/products", "products", rows, f"{link('Shop by category', '/categories')} | {link('Home', '/')}")


def _product(c: Company, p: Product) -> dict[str, Any]:
    manager = c.people[p.manager]
    return _page(p.name, [
        f"Category: {link(p.category, f'/categories/{slug(p.category)}')}",
        f"Brand: {p.brand}",
        f"Price: {money(p.price)}",
        f"Rating: {p.rating} (out of 5)",
        f"Reviews: {p.reviews}",
        f"SKU: {p.sku}",
        f"Stock: {p.stock} units",
        f"Warranty: {p.warranty} {'year' if p.warranty == 1 else 'years'}",
        f"Product manager: {link(manager.name, manager.url)}",
        "## Specifications",
        *(f"{key}: {value}" for key, value in p.specs),
        f"{link('Product catalogue', '/products')} | {link('Home', '/')}",
    ])


def _categories(c: Company) -> Site:
    names = sorted(CATEGORIES)
    pages: Site = {"/categories": _page("Shop by category", [
        "Each category lists its products with price and rating, sorted by name.",
        *(f"{link(name, f'/categories/{slug(name)}')}" for name in names),
        link("Home", "/"),
    ])}
    for name in names:
        items = sorted((p for p in c.products.values() if p.category == name), key=lambda p: p.name)
        pages[f"/categories/{slug(name)}"] = _page(name, [
            f"{len(items)} products, sorted by name.",
            *(f"{link(p.name, p.url)} — {money(p.price)} — rated {p.rating}" for p in items),
            f"{link('All categories', '/categories')} | {link('Home', '/')}",
        ])
    return pages


def _directory(c: Company) -> Site:
    people = sorted(c.people.values(), key=lambda p: (p.last, p.first))
    rows = [f"{link(p.name, p.url)} — {p.title}, {p.department}" for p in people]
    return _listing("/staff", "people", rows, f"{link('Departments', '/departments')} | {link('Home', '/')}")


def _person(c: Company, p: Person) -> dict[str, Any]:
    dept = c.departments[p.department]
    lines = [f"Title: {p.title}", f"Department: {link(dept.name, dept.url)}"]
    if p.manager:
        lines.append(f"Reports to: {link(p.manager, c.people[p.manager].url)}")
    lines += [f"Email: {p.first.lower()}.{p.last.lower()}@{c.host}", f"Phone extension: {p.extension}",
              f"Office: {p.office}", f"Joined: {p.joined}"]
    if p.products:
        lines.append("## Products managed")
        lines += [link(name, c.products[name].url) for name in sorted(p.products)]
    lines.append(f"{link('Staff directory', '/staff')} | {link('Home', '/')}")
    return _page(p.name, lines)


def _departments(c: Company) -> Site:
    depts = sorted(c.departments.values(), key=lambda d: d.name)
    pages: Site = {"/departments": _page("Departments", [
        *(f"{link(d.name, d.url)} — floor {d.floor}" for d in depts),
        link("Home", "/"),
    ])}
    for d in depts:
        head = c.people[d.head]
        members = sorted((c.people[m] for m in d.members), key=lambda p: (p.last, p.first))
        pages[d.url] = _page(f"{d.name} department", [
            f"Head: {link(head.name, head.url)}",
            f"Location: Floor {d.floor}, {d.wing} wing",
            f"Phone extension: {d.extension}",
            "## Members",
            *(f"{link(m.name, m.url)} — {m.title}" for m in members),
            f"{link('All departments', '/departments')} | {link('Staff directory', '/staff')} | {link('Home', '/')}",
        ])
    return pages


def _news(c: Company) -> Site:
    pages: Site = {"/news": _page("News", [
        "Latest first.",
        *(f"{a.published.isoformat()} — {link(a.title, a.url)}" for a in c.articles),
        link("Home", "/"),
    ])}
    for a in c.articles:
        author, product = c.people[a.author], c.products[a.product]
        pages[a.url] = _page(a.title, [
            f"Published: {a.published.isoformat()}",
            f"Author: {link(author.name, author.url)}",
            f"Featured product: {link(product.name, product.url)}",
            f"Our {author.department} team has been trying the {product.name} for a few weeks.",
            f"It sells for {money(product.price)} and our customers rate it {product.rating} out of 5.",
            f"{link('All news', '/news')} | {link('Home', '/')}",
        ])
    return pages


def build_site(seed: int, n_products: int = 88, n_people: int = 48, n_articles: int = 12) -> Site:
    """Every page of the site of ``seed``, by URL; the same seed always gives the same site."""
    c = draw_company(seed, n_products, n_people, n_articles)
    site: Site = {"/": _home(c)}
    site.update(_catalogue(c))
    site.update({p.url: _product(c, p) for p in c.products.values()})
    site.update(_categories(c))
    site.update(_directory(c))
    site.update({p.url: _person(c, p) for p in c.people.values()})
    site.update(_departments(c))
    site.update(_news(c))
    return site
