"""Sample department exports of the sample province, for tests, the benchmark and the demo.

:class:`SampleGenerator` invents the market entities of the sample province
(:mod:`registry.seed`) and what happens to them, as each department would record it:

* **registrations** (市场主体登记): 设立, and for some entities a later 变更 or 注销, with
  valid USCCs (``91`` enterprise, ``92`` individual business, ``93`` cooperative), plausible
  names, people and addresses, and business scopes in the standard wording
  "许可项目：…；…。（…）一般项目：…（…）。" — about 30 % of them with a 许可项目 of the
  approval catalog;
* **licences** (行政许可) for most entities whose scope needs a permit, usually from the
  department the catalog routes the item to;
* **penalties** (行政处罚) with realistic violations, bases and amounts in 万元, some
  revoking a licence the entity holds, or punishing trading without one;
* **credit list entries** (名单): 列入, and for some a later 移出.

Each record is kept as its canonical fields (what the mapping must produce) **and** as a
row in the department's own export format. The format is not described here: each shipped
export in ``connectors/departments/`` is a connector file (source, encoding) and a mapping
file (columns, date formats, codes), and rows are rendered *through* that mapping, so the
mapping stays the one description of a department's format.

A share of records is bad on purpose (``bad_share``), each labelled with its
:class:`Defect` and the dead-letter reason codes the platform must give it — a wrong USCC
check character, a wrong organization-code check, an impossible date, dates out of order,
a missing required field, a negative amount, an unknown code, or (CSV) a line in the wrong
encoding.

Example::

    manifest = generate_exports(Path("connectors/departments/exports"), 10_000, seed=1,
                                bad_share=0.05)
    # connectors/departments/*.connector.yaml now read these files as they are

Everything is deterministic for a seed and a ``today``.
"""

from __future__ import annotations

import csv
import gc
import io
import json
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from enum import StrEnum
from functools import lru_cache
from itertools import accumulate
from operator import itemgetter
from pathlib import Path
from typing import Any

from connectors import DEPARTMENTS_DIR
from connectors.config import ConnectorConfig, FileSourceConfig
from connectors.file_source import FileFormat
from connectors.mapping import DepartmentMapping, FieldRule
from registry.seed import ApprovalItem, Department, SampleProvince, load_sample_province
from xietong.clock import business_clock
from xietong.uscc import (
    USCC_ALPHABET,
    make_uscc,
    uscc_check_character,
)

#: The shipped department exports: a ``<name>.connector.yaml`` and a ``<name>.yaml`` mapping each.

# -- bad records ----------------------------------------------------------------------------


class Defect(StrEnum):
    """What is wrong with a bad sample record, on purpose."""

    USCC_CHECK_CHARACTER = "uscc_check_character"  # position 18 wrong
    ORGANIZATION_CHECK = "organization_check"  # position 17 wrong, 18 recomputed to match
    IMPOSSIBLE_DATE = "impossible_date"  # 2025-02-30, 2025年13月01日
    DATE_ORDER = "date_order"  # an end before its start
    MISSING_REQUIRED = "missing_required"
    NEGATIVE_AMOUNT = "negative_amount"
    UNKNOWN_CODE = "unknown_code"  # a value the mapping's codes do not know
    WRONG_ENCODING = "wrong_encoding"  # a CSV line in the other encoding


#: The dead-letter reason codes each defect must produce (connectors.mapping/validation,
#: xietong.uscc, connectors.file_source).
EXPECTED_REASONS: dict[Defect, tuple[str, ...]] = {
    Defect.USCC_CHECK_CHARACTER: ("uscc.check_character",),
    Defect.ORGANIZATION_CHECK: ("uscc.organization_check",),
    Defect.IMPOSSIBLE_DATE: ("date.invalid",),
    Defect.DATE_ORDER: ("date.order",),
    Defect.MISSING_REQUIRED: ("required",),
    Defect.NEGATIVE_AMOUNT: ("amount.negative",),
    Defect.UNKNOWN_CODE: ("code.unknown",),
    Defect.WRONG_ENCODING: ("encoding.invalid",),
}

# Per record type: the (earlier, later) dates a DATE_ORDER defect swaps, the required date
# fields an impossible date may hit, the required text fields that may go missing, the
# amount a NEGATIVE_AMOUNT defect makes negative, and the coded fields with a value the
# departments' code tables do not know.
_DATE_ORDER_PAIR = {
    "registration": ("established_on", "operating_term_end"),
    "licence": ("valid_from", "valid_to"),
    "penalty": ("decided_on", "publicity_until"),
    "credit_list_entry": ("listed_on", "planned_removal_on"),
}
_REQUIRED_DATES = {
    "registration": ("event_date", "established_on"),
    "licence": ("decided_on", "valid_from"),
    "penalty": ("decided_on",),
    "credit_list_entry": ("listed_on",),
}
_REQUIRED_TEXT = {
    "registration": ("name", "legal_representative", "address", "industry_code"),
    "licence": ("holder_name", "licence_number", "content"),
    "penalty": ("party_name", "decision_number", "violation_facts"),
    "credit_list_entry": ("entity_name", "document_number", "reason"),
}
_AMOUNT = {"registration": "registered_capital", "penalty": "fine_amount"}
_UNKNOWN_CODES = {
    ("registration", "entity_type"): "事业单位",
    ("registration", "status"): "歇业",  # a status since 2022 that the code table lacks
    ("registration", "event_kind"): "备案",
    ("licence", "category"): "备案",
    ("licence", "status"): "中止",
    ("penalty", "categories"): "责令改正",  # an order to correct is not a penalty
    ("credit_list_entry", "list_type"): "重点关注名单",
    ("credit_list_entry", "action"): "修改",
}

# -- records --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleRecord:
    """One record of a department export: its canonical fields and its row.

    ``canonical`` holds every field of the record type (envelope aside) as the mapping must
    produce it; for a bad record it is what the department meant. ``row`` is the record in
    the department's format (column → value, as written to the file).
    """

    export: str
    record_type: str
    source_record_id: str
    canonical: dict[str, Any]
    row: dict[str, Any]
    defect: Defect | None = None

    @property
    def good(self) -> bool:
        return self.defect is None

    @property
    def expected_reasons(self) -> tuple[str, ...]:
        """The dead-letter reason codes this record must be rejected with (none if good)."""
        return () if self.defect is None else EXPECTED_REASONS[self.defect]


@dataclass
class SampleSet:
    """Generated records by export (connector name), each list in the file's row order."""

    exports: dict[str, list[SampleRecord]]

    @property
    def records(self) -> list[SampleRecord]:
        return [record for records in self.exports.values() for record in records]

    def of_type(self, record_type: str) -> list[SampleRecord]:
        return [record for record in self.records if record.record_type == record_type]


# -- department formats ---------------------------------------------------------------------

Render = Callable[[Any], Any]


@dataclass
class DepartmentExport:
    """A shipped department export: where it is read from and how a row is written.

    Built from a connector file and its mapping; :meth:`render` is the mapping run
    backwards (a date through its date format, a symbol through the code table …).
    """

    name: str
    mapping: DepartmentMapping
    file_format: FileFormat
    encoding: str
    file_name: str
    columns: tuple[str, ...]
    constants: dict[str, Any]
    # The row is [record id, *canonical values in column order, version?], then the values
    # that need it are converted in place: C-speed item fetching, Python only where needed.
    _values: Callable[[dict[str, Any]], tuple[Any, ...]] = field(repr=False)
    _conversions: list[tuple[int, Render]] = field(repr=False)

    @classmethod
    def load(cls, connector_file: Path) -> DepartmentExport:
        config = ConnectorConfig.load(connector_file)
        source = config.source
        if not isinstance(source, FileSourceConfig) or config.mapping is None:
            raise ValueError(f"{connector_file}: a sample export needs a file source and a mapping")
        mapping = DepartmentMapping.load(config.mapping)
        file_format = FileFormat(source.format) if source.format else FileFormat.of(source.path)
        spec = mapping.spec
        schema_types = {f["name"]: f["type"] for f in mapping.record_type.schema["fields"]}
        names: list[str] = []
        conversions: list[tuple[int, Render]] = []
        columns = [spec.source_record_id]
        for name, rule in spec.fields.items():
            if rule.column is None or rule.column in columns:
                continue  # a constant, or a column already written (经营范围 twice)
            if rule.scope:
                raise ValueError(
                    f"{connector_file}: {name} splits column {rule.column!r}, which no text"
                    " field writes; map business_scope to it first"
                )
            renderer = _renderer(schema_types[name], rule, spec.date_formats_of(rule), file_format)
            if renderer is not None:
                conversions.append((len(columns), renderer))
            names.append(name)
            columns.append(rule.column)
        if spec.record_version:
            columns.append(spec.record_version)
        fixed = mapping.map({}).fields
        constants = {n: fixed[n] for n, rule in spec.fields.items() if rule.column is None}
        return cls(
            name=config.name,
            mapping=mapping,
            file_format=file_format,
            encoding=source.encoding,
            file_name=source.path.name,
            columns=tuple(columns),
            constants=constants,
            _values=itemgetter(*names) if len(names) > 1 else lambda c: (c[names[0]],),
            _conversions=conversions,
        )

    @property
    def record_type(self) -> str:
        return self.mapping.record_type.name

    def rule(self, field_name: str) -> FieldRule | None:
        return self.mapping.spec.fields.get(field_name)

    def column(self, field_name: str) -> str | None:
        rule = self.rule(field_name)
        return None if rule is None else rule.column

    def render(self, canonical: dict[str, Any], record_id: str, version: str) -> dict[str, Any]:
        """The department's row for these canonical fields."""
        values = [record_id, *self._values(canonical), version]
        for index, render in self._conversions:
            values[index] = render(values[index])
        return dict(zip(self.columns, values, strict=False))  # version only if a column

    def impossible_date(self, field_name: str, month_13: bool) -> str:
        """A date that does not exist, written in the field's date format."""
        formats = self.mapping.spec.date_formats_of(self.rule(field_name))
        fmt = formats[0] if formats else "%Y-%m-%d"
        month, day = ("13", "01") if month_13 else ("02", "30")
        return fmt.replace("%Y", "2025").replace("%m", month).replace("%d", day)

    @property
    def empty_text(self) -> str | None:
        """How the format writes an empty cell."""
        return "" if self.file_format is not FileFormat.XLSX else None


def _renderer(
    avro_type: Any, rule: FieldRule, date_formats: tuple[str, ...], file_format: FileFormat
) -> Render | None:
    """How one canonical value is written in the format; None: as it is."""
    nullable = isinstance(avro_type, list)
    kind = next(t for t in avro_type if t != "null") if nullable else avro_type
    render: Render | None = None
    if isinstance(kind, dict) and kind.get("logicalType") == "date":
        if file_format is not FileFormat.XLSX:  # Excel keeps dates as date cells
            # The first of the field's formats: the one its department writes most.
            render = _date_writer(date_formats[0] if date_formats else None)
    elif isinstance(kind, dict) and kind.get("logicalType") == "decimal":
        render = _decimal_text if file_format is FileFormat.CSV else float
    elif isinstance(kind, dict) and kind["type"] == "enum":
        codes = _reverse_codes(kind, rule)
        render = codes.__getitem__
    elif isinstance(kind, dict) and kind["type"] == "array":
        codes = _reverse_codes(kind["items"], rule)
        separator = rule.split or "、"
        render = lambda values: separator.join(codes[v] for v in values)  # noqa: E731
    empty = rule.empty[0] if rule.empty else ("" if file_format is FileFormat.CSV else None)
    if not nullable or (render is None and empty is None):
        return render
    inner = render or _identity
    return lambda value: empty if value is None else inner(value)


def _reverse_codes(avro_enum: Any, rule: FieldRule) -> dict[str, str]:
    """Symbol → the department's code: the first code the mapping lists for it."""
    reverse: dict[str, str] = {}
    for code, symbol in rule.codes.items():
        reverse.setdefault(symbol, code)
    for symbol in avro_enum.get("symbols", ()) if isinstance(avro_enum, dict) else ():
        reverse.setdefault(symbol, symbol)
    return reverse


def _identity(value: Any) -> Any:
    return value


def _decimal_text(value: Decimal) -> str:
    return format(value, "f")


def _date_writer(date_format: str | None) -> Render:
    simple = (
        date_format is not None
        and date_format.replace("%Y", "").replace("%m", "").replace("%d", "").find("%") < 0
    )

    @lru_cache(maxsize=8192)
    def write(day: date) -> str:
        if date_format is None:
            return day.isoformat()
        if simple:  # strftime is slow with non-ASCII formats such as %Y年%m月%d日
            return (
                date_format.replace("%Y", f"{day.year:04d}")
                .replace("%m", f"{day.month:02d}")
                .replace("%d", f"{day.day:02d}")
            )
        return day.strftime(date_format)

    return write


def load_exports(directory: Path = DEPARTMENTS_DIR) -> dict[str, DepartmentExport]:
    """Every shipped export of ``directory`` (``*.connector.yaml``), by connector name."""
    exports = [DepartmentExport.load(path) for path in sorted(directory.glob("*.connector.yaml"))]
    return {export.name: export for export in exports}


# -- the vocabulary of plausible entities -----------------------------------------------------

_SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任"
    "沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方邹孟熊秦邱江尹薛段雷侯龙史陶黎贺顾毛郝龚邵万钱严戴莫孔汤应楼"
)
_GIVEN = (
    "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍建国红梅志红飞浩宇子涵欣怡俊杰晓东海燕"
    "佳琪思远文博雨轩嘉怡一鸣晨曦天佑梓萱浩然雅婷振华立新春燕丽君国平永康小龙淑珍金凤建军晓峰"
)
_TRADE_NAME_TEXT = (
    "鑫源恒达盛泰华康锦程瑞丰嘉禾永盛天合云帆德润明辉新禾和美佳味金桥宏图富春钱塘西子之江甬城"
    "四明东钱天一港城海天远航卓越博雅睿智众诚信达同创汇通聚福福满百川千禧万家正元致远凯旋星辰"
    "蓝海青禾绿源春晖朝阳宜家乐享悦来兴隆昌盛安康康宁泰和丰收满堂福源旺达隆盛通达顺和科信中恒"
    "华锦锦绣雅居南湖北山运河良渚三江天童梅园竹韵兰亭松风云栖龙井九溪灵隐孤山白堤苏堤双浦梧桐"
    "银杏"
)
#: 字号 (trade names), two characters each.
_TRADE_NAMES = tuple(_TRADE_NAME_TEXT[i : i + 2] for i in range(0, len(_TRADE_NAME_TEXT), 2))
_ROADS: dict[str, tuple[str, ...]] = {
    "330102": ("解放路", "庆春路", "凯旋路", "秋涛路", "望江东路", "钱江路", "清江路", "景昙路"),
    "330106": ("文三路", "天目山路", "古墩路", "文一西路", "教工路", "学院路", "留下街", "西溪路"),
    "330110": ("文一西路", "五常大道", "荆长大道", "良睦路", "龙潭路", "向往街"),
    "330203": ("中山西路", "解放南路", "望春路", "药行街", "柳汀街", "环城西路"),
    "330206": ("明州路", "长江路", "太河路", "新大路", "泰山路", "华山路"),
    "330212": ("天童南路", "四明中路", "宁南南路", "钱湖北路", "首南中路", "嵩江中路"),
}
_COUNTY_WEIGHTS = {
    "330102": 15,
    "330106": 20,
    "330110": 25,
    "330203": 12,
    "330206": 10,
    "330212": 18,
}
_COUNTY_SHORT = {
    "330102": "上",
    "330106": "西",
    "330110": "余",
    "330203": "海",
    "330206": "仑",
    "330212": "鄞",
}
_CITY_SHORT = {"330100": ("杭州", "杭"), "330200": ("宁波", "甬"), "330000": ("浙江", "浙")}
_SECTOR_SHORT = {
    "market_regulation": "市监",
    "health": "卫健",
    "drug_administration": "药监",
    "emergency_management": "应急",
    "transport": "交运",
    "culture_tourism": "文旅",
    "human_resources": "人社",
    "commerce": "商务",
    "tobacco": "烟",
    "salt": "盐",
    "communications": "通管",
    "housing_construction": "建",
    "agriculture": "农",
    "ecology_environment": "环",
    "press_publication": "新出",
    "taxation": "税",
    "court": "法",
}

#: Organization-code bodies assigned since 2015 are MA and six symbols of the USCC alphabet.
_BODY_SERIALS = 31**6
#: Enterprise types (individual businesses and cooperatives aside) and their weights.
_ENTERPRISE_TYPES = (
    ("LIMITED_LIABILITY", 84),
    ("SOLE_PROPRIETORSHIP", 4),
    ("PARTNERSHIP", 3),
    ("BRANCH", 5),
    ("JOINT_STOCK", 2),
    ("FOREIGN_INVESTED", 2),
)
_GENERAL_TAIL = "（除依法须经批准的项目外，凭营业执照依法自主开展经营活动）"
_PERMIT_TAIL = (
    "（依法须经批准的项目，经相关部门批准后方可开展经营活动，具体经营项目以审批结果为准）"
)


@dataclass(frozen=True)
class _Profile:
    """A line of business: its industry class, how names say it, and its scope wordings."""

    industry: str  # GB/T 4754-2017 class
    trade: str  # 行业表述 in an enterprise name
    shop: str | None  # the ending of an individual business's name; None: enterprises only
    permit: tuple[str, ...]  # 许可项目 (all in the approval catalog)
    general: tuple[str, ...]  # 一般项目
    weight: int


_PERMIT_PROFILES = (
    _Profile("H6210", "餐饮管理", "餐馆", ("餐饮服务",), ("餐饮管理", "外卖递送服务"), 30),
    _Profile("H6291", "餐饮", "小吃店", ("餐饮服务",), ("外卖递送服务",), 22),
    _Profile("H6220", "餐饮管理", "快餐店", ("餐饮服务", "食品销售"), ("餐饮管理",), 10),
    _Profile("F5229", "食品", "食品店", ("食品销售",), ("日用百货销售", "食用农产品零售"), 20),
    _Profile(
        "F5213",
        "商贸",
        "便利店",
        ("食品销售", "烟草制品零售"),
        ("日用百货销售", "文具用品零售"),
        16,
    ),
    _Profile(
        "F5227",
        "烟酒",
        "烟酒店",
        ("烟草制品零售",),
        ("食品销售（仅销售预包装食品）", "日用百货销售"),
        8,
    ),
    _Profile(
        "F5251",
        "医药",
        "药店",
        ("药品零售",),
        ("第一类医疗器械销售", "第二类医疗器械销售", "保健食品（预包装）销售"),
        6,
    ),
    _Profile("F5254", "医疗器械", None, ("第三类医疗器械经营",), ("第二类医疗器械销售",), 2),
    _Profile(
        "F5169",
        "化工",
        None,
        ("危险化学品经营",),
        ("化工产品销售（不含许可类化工产品）",),
        2,
    ),
    _Profile("F5299", "烟花", "烟花爆竹店", ("烟花爆竹零售",), ("日用百货销售",), 1),
    _Profile(
        "G5431",
        "物流",
        "货运部",
        ("道路货物运输（不含危险货物）",),
        ("普通货物仓储服务（不含危险化学品等需许可审批的项目）", "装卸搬运"),
        8,
    ),
    _Profile("F5125", "调味品", None, ("食盐批发",), ("食品销售（仅销售预包装食品）",), 1),
    _Profile("L7291", "旅行社", None, ("旅游业务",), ("会议及展览服务", "票务代理服务"), 2),
    _Profile("F5243", "文化", "书店", ("出版物零售",), ("文具用品零售", "办公用品销售"), 2),
    _Profile(
        "L7262",
        "人力资源",
        None,
        ("职业中介活动",),
        ("人力资源服务（不含职业中介活动、劳务派遣服务）", "企业管理咨询"),
        2,
    ),
    _Profile("R9013", "网络", "网吧", ("互联网上网服务",), ("食品销售（仅销售预包装食品）",), 1),
    _Profile("R9011", "娱乐", "歌舞厅", ("歌舞娱乐活动",), ("餐饮管理",), 1),
    _Profile(
        "I6429",
        "网络科技",
        None,
        ("第二类增值电信业务",),
        ("技术服务、技术开发、技术咨询、技术交流、技术转让、技术推广", "软件开发"),
        3,
    ),
    _Profile("E4710", "建设工程", None, ("建设工程施工",), ("建筑材料销售", "园林绿化工程施工"), 3),
    _Profile("D4512", "燃气", None, ("燃气经营",), ("五金产品零售",), 1),
    _Profile("F5265", "石化", None, ("成品油零售",), ("润滑油销售",), 1),
    _Profile("F5167", "农资", "农资店", ("农药零售",), ("肥料销售", "农用薄膜销售"), 2),
    _Profile("N7724", "环保科技", None, ("危险废物经营",), ("固体废物治理", "环保咨询服务"), 1),
    _Profile("H6121", "酒店管理", "宾馆", ("住宿服务",), ("酒店管理", "会议及展览服务"), 4),
    _Profile("O8040", "美容美发", "理发店", ("理发服务", "生活美容服务"), ("化妆品零售",), 6),
    _Profile("O8051", "洗浴", "浴室", ("洗浴服务",), ("养生保健服务（非医疗）",), 1),
)
_GENERAL_PROFILES = (
    _Profile("F5211", "商贸", "百货店", (), ("日用百货销售", "五金产品零售", "针纺织品销售"), 20),
    _Profile("F5232", "服饰", "服装店", (), ("服装服饰零售", "鞋帽零售"), 15),
    _Profile(
        "F5273",
        "电子科技",
        "电脑店",
        (),
        ("计算机软硬件及辅助设备零售", "电子产品销售"),
        10,
    ),
    _Profile(
        "I6513",
        "信息技术",
        None,
        (),
        (
            "软件开发",
            "信息技术咨询服务",
            "技术服务、技术开发、技术咨询、技术交流、技术转让、技术推广",
        ),
        15,
    ),
    _Profile("L7259", "广告", "广告部", (), ("广告设计、代理", "广告制作", "平面设计"), 8),
    _Profile("F5132", "服饰", None, (), ("服装服饰批发", "针纺织品及原料销售"), 6),
    _Profile("F5213", "商贸", "便利店", (), ("食品销售（仅销售预包装食品）", "日用百货销售"), 15),
    _Profile(
        "L7243",
        "企业管理咨询",
        None,
        (),
        ("企业管理咨询", "信息咨询服务（不含许可类信息咨询服务）"),
        10,
    ),
)
_COOPERATIVE = _Profile(
    "A0141",
    "果蔬",
    None,
    (),
    ("蔬菜种植", "水果种植", "农产品的生产、销售、加工、运输、贮藏及其他相关服务"),
    1,
)


@dataclass(frozen=True)
class _Violation:
    """A kind of violation: who punishes it, on what basis, how, and for how much (万元)."""

    sector: str
    violation_type: str
    facts: str  # may use {value}: 货值金额 or 违法所得 in 元
    legal_basis: str
    categories: tuple[str, ...]
    fine: tuple[float, float]  # 万元
    confiscation: bool = False
    revokes: str | None = None  # the approval item whose licence is revoked
    needs_licence: str | None = None  # only for holders of this item's licence
    unlicensed: str | None = None  # only for entities needing this item without its licence
    industries: tuple[str, ...] = ()  # only in industry classes starting so ("F", "H62")
    weight: int = 1


_VIOLATIONS = (
    _Violation(
        "market_regulation",
        "价格违法行为",
        "当事人在经营场所销售商品未按照规定明码标价",
        "《中华人民共和国价格法》第四十二条",
        ("WARNING", "FINE"),
        (0.05, 0.5),
        industries=("F52", "H", "O"),
        weight=12,
    ),
    _Violation(
        "market_regulation",
        "广告违法行为",
        "当事人通过微信公众号发布含有虚假内容的广告，广告费用{value}元",
        "《中华人民共和国广告法》第五十五条",
        ("FINE",),
        (0.3, 4.0),
        weight=4,
    ),
    _Violation(
        "market_regulation",
        "产品质量违法行为",
        "当事人销售以次充好的产品，货值金额{value}元",
        "《中华人民共和国产品质量法》第五十条",
        ("CONFISCATION", "FINE"),
        (0.2, 3.0),
        confiscation=True,
        industries=("F",),
        weight=6,
    ),
    _Violation(
        "market_regulation",
        "登记违法行为",
        "当事人未将营业执照置于住所或者主要经营场所的醒目位置，经责令改正拒不改正",
        "《中华人民共和国市场主体登记管理条例》",
        ("FINE",),
        (0.1, 1.0),
        weight=4,
    ),
    _Violation(
        "market_regulation",
        "食品安全违法行为",
        "当事人未取得食品经营许可从事食品经营活动，违法所得{value}元",
        "《中华人民共和国食品安全法》第一百二十二条",
        ("CONFISCATION", "FINE"),
        (5.0, 10.0),
        confiscation=True,
        unlicensed="SPJYXK",
        weight=10,
    ),
    _Violation(
        "market_regulation",
        "食品安全违法行为",
        "当事人经营超过保质期的食品，货值金额{value}元",
        "《中华人民共和国食品安全法》",
        ("CONFISCATION", "FINE"),
        (5.0, 10.0),
        confiscation=True,
        needs_licence="SPJYXK",
        weight=10,
    ),
    _Violation(
        "market_regulation",
        "食品安全违法行为",
        "当事人经营病死、毒死或者死因不明的畜禽肉类，货值金额{value}元，情节严重",
        "《中华人民共和国食品安全法》",
        ("CONFISCATION", "FINE", "LICENCE_SUSPENSION_OR_REVOCATION"),
        (10.0, 20.0),
        confiscation=True,
        revokes="SPJYXK",
        needs_licence="SPJYXK",
        weight=2,
    ),
    _Violation(
        "health",
        "公共场所卫生违法行为",
        "当事人未按照规定对顾客用品用具进行清洗、消毒、保洁",
        "《公共场所卫生管理条例实施细则》",
        ("WARNING", "FINE"),
        (0.05, 0.2),
        needs_licence="GGCSWSXK",
        weight=6,
    ),
    _Violation(
        "health",
        "公共场所卫生违法行为",
        "当事人公共场所卫生检测不合格，经责令整改逾期未改正，情节严重",
        "《公共场所卫生管理条例实施细则》",
        ("FINE", "LICENCE_SUSPENSION_OR_REVOCATION"),
        (0.2, 2.0),
        revokes="GGCSWSXK",
        needs_licence="GGCSWSXK",
        weight=1,
    ),
    _Violation(
        "emergency_management",
        "危险化学品违法行为",
        "当事人未取得危险化学品经营许可证从事危险化学品经营，违法所得{value}元",
        "《危险化学品安全管理条例》第七十七条",
        ("CONFISCATION", "FINE"),
        (10.0, 20.0),
        confiscation=True,
        unlicensed="WXHXPJYXK",
        weight=6,
    ),
    _Violation(
        "emergency_management",
        "危险化学品违法行为",
        "当事人向不具有相关许可证件的单位销售易制爆危险化学品",
        "《危险化学品安全管理条例》",
        ("FINE", "LICENCE_SUSPENSION_OR_REVOCATION"),
        (10.0, 20.0),
        revokes="WXHXPJYXK",
        needs_licence="WXHXPJYXK",
        weight=2,
    ),
    _Violation(
        "emergency_management",
        "烟花爆竹违法行为",
        "当事人超越许可证载明限量储存烟花爆竹",
        "《烟花爆竹安全管理条例》",
        ("FINE",),
        (0.1, 0.5),
        needs_licence="YHBZJYXK",
        weight=4,
    ),
    _Violation(
        "transport",
        "道路运输违法行为",
        "当事人未按照规定维护和检测道路运输车辆",
        "《中华人民共和国道路运输条例》",
        ("FINE",),
        (0.1, 0.5),
        needs_licence="DLHWYSXK",
        weight=6,
    ),
    _Violation(
        "transport",
        "道路运输违法行为",
        "当事人使用无道路运输证的车辆从事道路货物运输经营，情节严重",
        "《中华人民共和国道路运输条例》",
        ("FINE", "LICENCE_SUSPENSION_OR_REVOCATION"),
        (0.3, 1.0),
        revokes="DLHWYSXK",
        needs_licence="DLHWYSXK",
        weight=1,
    ),
    _Violation(
        "tobacco",
        "烟草专卖违法行为",
        "当事人无烟草专卖零售许可证经营烟草制品零售业务，违法所得{value}元",
        "《中华人民共和国烟草专卖法实施条例》",
        ("CONFISCATION", "FINE"),
        (0.2, 2.0),
        confiscation=True,
        unlicensed="YCZMLSXK",
        weight=6,
    ),
    _Violation(
        "tobacco",
        "烟草专卖违法行为",
        "当事人从非指定渠道购进卷烟，情节严重",
        "《中华人民共和国烟草专卖法实施条例》",
        ("CONFISCATION", "LICENCE_SUSPENSION_OR_REVOCATION"),
        (0.0, 0.0),
        confiscation=True,
        revokes="YCZMLSXK",
        needs_licence="YCZMLSXK",
        weight=2,
    ),
    _Violation(
        "culture_tourism",
        "文化市场违法行为",
        "当事人经营的互联网上网服务营业场所接纳未成年人进入",
        "《互联网上网服务营业场所管理条例》",
        ("WARNING", "FINE"),
        (0.2, 1.5),
        needs_licence="HLWSWFWXK",
        weight=3,
    ),
    _Violation(
        "culture_tourism",
        "旅游违法行为",
        "当事人未与旅游者签订书面旅游合同",
        "《中华人民共和国旅游法》",
        ("FINE",),
        (0.2, 2.0),
        needs_licence="LXSYWXK",
        weight=3,
    ),
    _Violation(
        "human_resources",
        "人力资源市场违法行为",
        "当事人未经许可擅自从事职业中介活动，违法所得{value}元",
        "《人力资源市场暂行条例》",
        ("CONFISCATION", "FINE"),
        (1.0, 5.0),
        confiscation=True,
        unlicensed="RLZYFWXK",
        weight=4,
    ),
    _Violation(
        "ecology_environment",
        "大气污染违法行为",
        "当事人超过大气污染物排放标准排放大气污染物",
        "《中华人民共和国大气污染防治法》",
        ("FINE",),
        (10.0, 100.0),
        industries=("F5169", "N7724", "D45"),
        weight=4,
    ),
    _Violation(
        "ecology_environment",
        "大气污染违法行为",
        "当事人在施工工地未采取有效防尘降尘措施",
        "《中华人民共和国大气污染防治法》",
        ("FINE",),
        (1.0, 10.0),
        industries=("E47",),
        weight=4,
    ),
    _Violation(
        "ecology_environment",
        "大气污染违法行为",
        "当事人加油站未按照规定安装、使用油气回收装置",
        "《中华人民共和国大气污染防治法》",
        ("FINE",),
        (2.0, 20.0),
        industries=("F5265",),
        weight=4,
    ),
)
_CATEGORY_WORDS = {
    "WARNING": "警告",
    "FINE": "罚款",
    "CONFISCATION": "没收违法所得",
    "LICENCE_SUSPENSION_OR_REVOCATION": "吊销许可证件",
}

#: Reasons (列入事由) and bases of the listings not caused by a penalty, by list type.
_LIST_REASONS = {
    "ABNORMAL_OPERATION": (
        ("未按照《企业信息公示暂行条例》第八条规定的期限公示年度报告", "《企业信息公示暂行条例》"),
        ("通过登记的住所或者经营场所无法联系", "《企业信息公示暂行条例》"),
    ),
    "JUDGMENT_DEFAULTER": (
        (
            "有履行能力而拒不履行生效法律文书确定义务",
            "《最高人民法院关于公布失信被执行人名单信息的若干规定》第一条",
        ),
    ),
    "MAJOR_TAX_VIOLATION": (
        ("虚开增值税专用发票", "《重大税收违法失信主体信息公布管理办法》（国家税务总局令第54号）"),
    ),
    "SECTOR": (
        (
            "拖欠农民工工资数额较大，经责令限期支付逾期未支付",
            "《拖欠农民工工资失信联合惩戒对象名单管理暂行办法》",
        ),
    ),
}
_ENTRY_PREFIX = {  # 名单条目编号 prefixes, from the lists' Chinese names
    "SERIOUS_ILLEGAL_DISHONEST": "YZSX",
    "ABNORMAL_OPERATION": "JYYC",
    "JUDGMENT_DEFAULTER": "SXBZX",
    "MAJOR_TAX_VIOLATION": "ZDSS",
    "SECTOR": "HYLY",
}


# -- the world ------------------------------------------------------------------------------


@dataclass
class _Entity:
    uscc: str
    name: str
    entity_type: str
    legal_representative: str
    registered_capital: Decimal | None
    established_on: date
    operating_term_end: date | None
    address: str
    division: str
    city: str
    profile: _Profile
    permit: tuple[str, ...]
    general: tuple[str, ...]
    authority: Department

    @property
    def enterprise(self) -> bool:
        return self.entity_type not in ("INDIVIDUAL_BUSINESS", "FARMERS_COOPERATIVE")


@dataclass
class _Licence:
    item: ApprovalItem
    number: str
    decided_on: date
    authority: Department


@dataclass
class _Draft:
    """A record before it is placed in its export and rendered."""

    export: str
    record_type: str
    day: date
    canonical: dict[str, Any]
    defect: Defect | None = None


class SampleGenerator:
    """Generates the sample province's department records; deterministic for a seed.

    ``bad_share`` of the records (exactly, rounded) are bad, each with one :class:`Defect`.
    ``today`` bounds every date: records lie in the ``history_days`` before it (three
    years by default; the department simulator of ``make run`` uses a few weeks).
    """

    def __init__(
        self,
        province: SampleProvince | None = None,
        seed: int = 0,
        bad_share: float = 0.05,
        today: date | None = None,
        departments_dir: Path = DEPARTMENTS_DIR,
        history_days: int = 3 * 365,
    ) -> None:
        if not 0.0 <= bad_share <= 1.0:
            raise ValueError(f"bad_share must be between 0 and 1, found {bad_share}")
        self.province = province or load_sample_province()
        self.seed = seed
        self.bad_share = bad_share
        self.today = today or business_clock().today()
        self.exports = load_exports(departments_dir)
        self._rng = random.Random(seed)
        self._defect_rng = random.Random(f"defects:{seed}")
        self._usccs: set[str] = set()
        self._sequence: Counter[str] = Counter()
        unknown = [
            wording
            for profile in _PERMIT_PROFILES
            for wording in profile.permit
            if not self.province.items_for_scope([wording])
        ]
        if unknown:
            raise ValueError(f"许可项目 wordings not in the approval catalog: {unknown}")
        self._items_for_profile: dict[tuple[str, ...], list[ApprovalItem]] = {(): []}
        for profile in _PERMIT_PROFILES:
            self._items_for_profile[profile.permit] = self.province.items_for_scope(
                list(profile.permit)
            )
        self._counties = list(_COUNTY_WEIGHTS)
        self._city_of = {c: self.province.city_of(c).code for c in self._counties}
        self._place_names = {  # 杭州市西湖区
            c: self.province.division(self._city_of[c]).name + self.province.division(c).name
            for c in self._counties
        }
        self._county_weights = list(accumulate(_COUNTY_WEIGHTS.values()))
        self._permit_weights = list(accumulate(p.weight for p in _PERMIT_PROFILES))
        self._general_weights = list(accumulate(p.weight for p in _GENERAL_PROFILES))
        self._enterprise_types = [entity_type for entity_type, _ in _ENTERPRISE_TYPES]
        self._enterprise_weights = list(accumulate(weight for _, weight in _ENTERPRISE_TYPES))
        if history_days < 1:
            raise ValueError(f"history_days must be at least 1, found {history_days}")
        self._first_day = (self.today - timedelta(days=history_days)).toordinal()
        self._last_day = (self.today - timedelta(days=1)).toordinal()

    # -- the whole set ------------------------------------------------------------------------
    def generate(self, records: int) -> SampleSet:
        """Exactly ``records`` records, of which ``round(records * bad_share)`` are bad."""
        # The records hold no reference cycles, and collecting a heap that grows by a few
        # hundred thousand dicts, over and over, costs a third of the time.
        collecting = gc.isenabled()
        gc.disable()
        try:
            return self._place(self._drafts(records))
        finally:
            if collecting:
                gc.enable()

    def _drafts(self, records: int) -> list[_Draft]:
        bad_total = round(records * self.bad_share)
        drafts: list[_Draft] = []
        bad = 0
        while len(drafts) < records:
            for draft in self._story():
                remaining = records - len(drafts)
                if remaining == 0:
                    break
                # Selection sampling: exactly bad_total bad records, uniformly spread.
                if self._defect_rng.random() * remaining < bad_total - bad:
                    draft.defect = self._defect_for(draft)
                    bad += 1
                drafts.append(draft)
                if draft.defect and draft.canonical.get("event_kind") == "ESTABLISH":
                    break  # the entity never got registered: nothing else happens to it
        return drafts

    def _place(self, drafts: list[_Draft]) -> SampleSet:
        by_export: dict[str, list[_Draft]] = defaultdict(list)
        for draft in drafts:
            by_export[draft.export].append(draft)
        placed: dict[str, list[SampleRecord]] = {}
        for name, export in self.exports.items():
            ordered = sorted(by_export.get(name, []), key=lambda d: d.day)
            division = self.province.department_by_uscc(export.mapping.department.uscc).division
            records = []
            # The record's update time (the mapping's version column): later rows of one
            # day a second later, so the versions of a record sort as they were written.
            of_the_day: Counter[date] = Counter()
            for number, draft in enumerate(ordered, start=1):
                day = draft.day.isoformat()
                record_id = f"{division}{day[:4]}{day[5:7]}{day[8:]}{number:07d}"
                of_the_day[draft.day] += 1
                minutes, seconds = divmod(of_the_day[draft.day], 60)
                hours, minutes = divmod(minutes, 60)
                version = f"{day} {8 + hours:02d}:{minutes:02d}:{seconds:02d}"
                records.append(self._record(export, draft, record_id, version))
            placed[name] = records
        return SampleSet(placed)

    def _record(
        self, export: DepartmentExport, draft: _Draft, record_id: str, version: str
    ) -> SampleRecord:
        canonical = {**draft.canonical, **export.constants} if export.constants else draft.canonical
        defect = draft.defect
        meant = canonical
        if defect is Defect.DATE_ORDER:
            earlier, later = _DATE_ORDER_PAIR[draft.record_type]
            days = self._defect_rng.randint(1, 400)
            meant = {**canonical, later: canonical[earlier] - timedelta(days=days)}
        elif defect is Defect.NEGATIVE_AMOUNT:
            name = _AMOUNT[draft.record_type]
            meant = {**canonical, name: -(canonical[name] or Decimal("10"))}
        row = export.render(meant, record_id, version)
        if defect is not None:
            self._spoil(export, draft.record_type, defect, row)
        return SampleRecord(export.name, draft.record_type, record_id, canonical, row, defect)

    # -- defects ---------------------------------------------------------------------------
    def _defect_for(self, draft: _Draft) -> Defect:
        export = self.exports[draft.export]
        applicable = [
            Defect.USCC_CHECK_CHARACTER,
            Defect.ORGANIZATION_CHECK,
            Defect.IMPOSSIBLE_DATE,
            Defect.DATE_ORDER,
            Defect.MISSING_REQUIRED,
        ]
        if draft.record_type in _AMOUNT and export.column(_AMOUNT[draft.record_type]):
            applicable.append(Defect.NEGATIVE_AMOUNT)
        if self._coded_fields(export):
            applicable.append(Defect.UNKNOWN_CODE)
        if export.file_format is FileFormat.CSV:
            applicable.append(Defect.WRONG_ENCODING)
        return self._defect_rng.choice(applicable)

    @staticmethod
    def _coded_fields(export: DepartmentExport) -> list[str]:
        return [
            name
            for name, rule in export.mapping.spec.fields.items()
            if rule.column and rule.codes and (export.record_type, name) in _UNKNOWN_CODES
        ]

    def _spoil(
        self, export: DepartmentExport, record_type: str, defect: Defect, row: dict[str, Any]
    ) -> None:
        rng = self._defect_rng
        uscc_column = export.column("uscc")
        assert uscc_column is not None
        if defect is Defect.USCC_CHECK_CHARACTER:
            code = row[uscc_column]
            wrong = rng.choice([c for c in USCC_ALPHABET if c != code[17]])
            row[uscc_column] = code[:17] + wrong
        elif defect is Defect.ORGANIZATION_CHECK:
            code = row[uscc_column]
            wrong = rng.choice([c for c in "0123456789X" if c != code[16]])
            row[uscc_column] = code[:16] + wrong + uscc_check_character(code[:16] + wrong)
        elif defect is Defect.IMPOSSIBLE_DATE:
            name = rng.choice(_REQUIRED_DATES[record_type])
            column = export.column(name)
            assert column is not None
            row[column] = export.impossible_date(name, month_13=rng.random() < 0.5)
        elif defect is Defect.MISSING_REQUIRED:
            names = [n for n in _REQUIRED_TEXT[record_type] if export.column(n)]
            column = export.column(rng.choice(names))
            assert column is not None
            row[column] = export.empty_text
        elif defect is Defect.UNKNOWN_CODE:
            name = rng.choice(self._coded_fields(export))
            rule = export.rule(name)
            assert rule is not None and rule.column is not None
            unknown = _UNKNOWN_CODES[record_type, name]
            if name == "categories":
                unknown = f"{row[rule.column]}{rule.split or '、'}{unknown}"
            row[rule.column] = unknown
        elif defect is Defect.WRONG_ENCODING:
            _make_undecodable(row, export)

    # -- one entity's story ------------------------------------------------------------------
    def _story(self) -> list[_Draft]:
        """An entity's registration and what follows it, in the order it happens."""
        rng = self._rng
        entity = self._entity()
        drafts = [self._registration(entity, "ESTABLISH", entity.established_on)]
        needed = [(item, entity.established_on) for item in self._items(entity.permit)]
        end = self._last_day
        if rng.random() < 0.06:
            start = entity.established_on.toordinal() + 30
            if start <= end:
                changed_on = date.fromordinal(rng.randint(start, end))
                added = self._change(entity)
                needed += [(item, changed_on) for item in self._items(added)]
                drafts.append(self._registration(entity, "CHANGE", changed_on))
        cancelled_on = None
        if rng.random() < 0.02:
            start = max(d.day for d in drafts).toordinal() + 60
            if start <= end:
                cancelled_on = date.fromordinal(rng.randint(start, end))
                end = cancelled_on.toordinal()
        licences: list[_Licence] = []
        for item, since in needed:
            if rng.random() < 0.78:
                licence = self._licence(entity, item, since, end)
                if licence is not None:
                    licences.append(licence[0])
                    drafts.append(licence[1])
        missing = {item.code for item, _ in needed} - {lic.item.code for lic in licences}
        if rng.random() < (0.16 if licences or missing else 0.08):
            for _ in range(1 if rng.random() < 0.85 else 2):
                drafts.extend(self._penalty(entity, licences, missing, end))
        drafts.extend(self._listings(entity, drafts, end))
        if cancelled_on is not None:
            drafts.append(self._registration(entity, "CANCEL", cancelled_on))
        return drafts

    def _items(self, permit: tuple[str, ...]) -> list[ApprovalItem]:
        found = self._items_for_profile.get(permit)
        return found if found is not None else self.province.items_for_scope(list(permit))

    def _entity(self) -> _Entity:
        rng = self._rng
        county = rng.choices(self._counties, cum_weights=self._county_weights)[0]
        city = self._city_of[county]
        roll = rng.random()
        if roll < 0.02:
            profile, entity_type = _COOPERATIVE, "FARMERS_COOPERATIVE"
        else:
            if roll < 0.02 + 0.29:  # with the permits some changes add: 30 % of registrations
                profile = rng.choices(_PERMIT_PROFILES, cum_weights=self._permit_weights)[0]
            else:
                profile = rng.choices(_GENERAL_PROFILES, cum_weights=self._general_weights)[0]
            if profile.shop and rng.random() < 0.6:
                entity_type = "INDIVIDUAL_BUSINESS"
            else:
                entity_type = rng.choices(
                    self._enterprise_types, cum_weights=self._enterprise_weights
                )[0]
        prefix = {"INDIVIDUAL_BUSINESS": "92", "FARMERS_COOPERATIVE": "93"}.get(entity_type, "91")
        at_city = entity_type in ("LIMITED_LIABILITY", "JOINT_STOCK", "FOREIGN_INVESTED")
        seat = city if at_city and rng.random() < 0.2 else county
        authority = self.province.department_of("market_regulation", seat)
        assert authority is not None
        established_on = date.fromordinal(rng.randint(self._first_day, self._last_day))
        general = profile.general[: rng.randint(1, len(profile.general))]
        return _Entity(
            uscc=self._uscc(prefix, seat),
            name=self._entity_name(entity_type, profile, city, county),
            entity_type=entity_type,
            legal_representative=self._person(),
            registered_capital=self._capital(entity_type),
            established_on=established_on,
            operating_term_end=self._term_end(entity_type, established_on),
            address=self._address(city, county),
            division=county,
            city=city,
            profile=profile,
            permit=profile.permit,
            general=general,
            authority=authority,
        )

    def _change(self, entity: _Entity) -> tuple[str, ...]:
        """Apply a 变更 to the entity; the 许可项目 it adds, if any."""
        rng = self._rng
        roll = rng.random()
        if roll < 0.4:
            entity.address = self._address(entity.city, entity.division)
        elif roll < 0.7 and entity.registered_capital is not None:
            entity.registered_capital = entity.registered_capital * 2
        elif not entity.permit:
            options = [p for p in _PERMIT_PROFILES if p.shop or entity.enterprise]
            added = rng.choices(options, [p.weight for p in options])[0].permit
            entity.permit = added
            return added
        return ()

    # -- registrations -----------------------------------------------------------------------
    def _registration(self, entity: _Entity, event_kind: str, day: date) -> _Draft:
        permit_text = "；".join(entity.permit)
        general_text = "；".join(entity.general)
        scope = (
            f"许可项目：{permit_text}。{_PERMIT_TAIL}一般项目：{general_text}{_GENERAL_TAIL}。"
            if entity.permit
            else f"一般项目：{general_text}{_GENERAL_TAIL}。"
        )
        items = [{"text": t, "kind": "PERMIT", "catalog_code": None} for t in entity.permit]
        items += [{"text": t, "kind": "GENERAL", "catalog_code": None} for t in entity.general]
        canonical = {
            "event_kind": event_kind,
            "event_date": day,
            "uscc": entity.uscc,
            "name": entity.name,
            "entity_type": entity.entity_type,
            "legal_representative": entity.legal_representative,
            "registered_capital": entity.registered_capital,
            "established_on": entity.established_on,
            "operating_term_end": entity.operating_term_end,
            "address": entity.address,
            "division_code": entity.division,
            "business_scope": scope,
            "business_scope_items": items,
            "industry_code": entity.profile.industry,
            "registering_authority_name": entity.authority.name,
            "registering_authority_uscc": entity.authority.uscc,
            "status": "CANCELLED" if event_kind == "CANCEL" else "ACTIVE",
        }
        export = "hz-amr-registration" if entity.city == "330100" else "nb-amr-registration"
        return _Draft(export, "registration", day, canonical)

    def _uscc(self, prefix: str, division: str) -> str:
        while True:
            serial = self._rng.randrange(_BODY_SERIALS)
            body = "MA"
            for _ in range(6):
                serial, symbol = divmod(serial, 31)
                body += USCC_ALPHABET[symbol]
            code = make_uscc(prefix, division, body8=body)
            if code not in self._usccs:
                self._usccs.add(code)
                return code

    def _person(self) -> str:
        rng = self._rng
        given = rng.choice(_GIVEN)
        if rng.random() < 0.7:
            given += rng.choice(_GIVEN)
        return rng.choice(_SURNAMES) + given

    def _entity_name(self, entity_type: str, profile: _Profile, city: str, county: str) -> str:
        rng = self._rng
        trade_name = rng.choice(_TRADE_NAMES)
        city_name, _ = _CITY_SHORT[city]
        place = self._place_names[county]
        if entity_type == "INDIVIDUAL_BUSINESS":
            if rng.random() < 0.3:
                trade_name = rng.choice(_SURNAMES) + "记"
            suffix = "（个体工商户）" if rng.random() < 0.5 else ""
            return f"{place}{trade_name}{profile.shop}{suffix}"
        if entity_type == "FARMERS_COOPERATIVE":
            return f"{place}{trade_name}{profile.trade}专业合作社"
        base = f"{city_name}{trade_name}{profile.trade}"
        return {
            "JOINT_STOCK": f"浙江{trade_name}{profile.trade}股份有限公司",
            "SOLE_PROPRIETORSHIP": f"{base}商行",
            "PARTNERSHIP": f"{base}合伙企业（有限合伙）",
            "BRANCH": f"{base}有限公司{place[3:-1]}分公司",
        }.get(entity_type, f"{base}有限公司")

    def _capital(self, entity_type: str) -> Decimal | None:
        rng = self._rng
        if entity_type in ("INDIVIDUAL_BUSINESS", "BRANCH"):
            return None
        if entity_type == "JOINT_STOCK":
            return Decimal(rng.choice((1000, 2000, 5000, 8000, 10000)))
        amount = Decimal(rng.choice((3, 5, 10, 10, 30, 50, 50, 100, 100, 200, 300, 500, 1000)))
        if rng.random() < 0.1:
            amount += Decimal(rng.randint(1, 99)) / 100
        return amount

    def _term_end(self, entity_type: str, established_on: date) -> date | None:
        if entity_type in ("INDIVIDUAL_BUSINESS", "FARMERS_COOPERATIVE"):
            return None
        if self._rng.random() < 0.7:
            return None  # 长期
        years = self._rng.choice((20, 30, 50))
        return _add_months(established_on, 12 * years) - timedelta(days=1)

    def _address(self, city: str, county: str) -> str:
        rng = self._rng
        road = rng.choice(_ROADS[county])
        address = f"浙江省{self._place_names[county]}{road}{rng.randint(1, 999)}号"
        roll = rng.random()
        if roll < 0.4:
            address += f"{rng.randint(1, 12)}幢{rng.randint(1, 28)}{rng.randint(1, 20):02d}室"
        elif roll < 0.7:
            address += f"{rng.randint(1, 3)}楼"
        return address

    # -- licences -------------------------------------------------------------------------
    def _licence(
        self, entity: _Entity, item: ApprovalItem, since: date, end: int
    ) -> tuple[_Licence, _Draft] | None:
        rng = self._rng
        day = since.toordinal() + rng.randint(3, 60)
        routed = self.province.route(item.code, entity.division)
        if day > end or routed is None:
            return None  # not decided yet, or 分流失败: nobody issues it
        decided_on = date.fromordinal(day)
        authority = routed
        if rng.random() < 0.1:
            # Older permits were often issued one level up, before approval was delegated.
            upper = self.province.department_of(item.sector, entity.city)
            authority = upper or routed
        number = self._licence_number(item, entity, decided_on)
        valid_to = None
        if item.validity_years:
            valid_to = _add_months(decided_on, 12 * item.validity_years) - timedelta(days=1)
        status, status_changed_on = "VALID", None
        if valid_to is not None and valid_to < self.today:
            status, status_changed_on = "EXPIRED", valid_to + timedelta(days=1)
        elif rng.random() < 0.02:
            # 注销 some time after the decision; drawn from the dates, so the sample's
            # random sequence stays as it was.
            status = "CANCELLED"
            status_changed_on = decided_on + (self.today - decided_on) / 2
        wordings = [w for w in entity.permit if item.matches_scope_entry(w)]
        canonical = {
            "uscc": entity.uscc,
            "holder_name": entity.name,
            "legal_representative": entity.legal_representative,
            "decision_document_name": f"{item.name}决定书",
            "decision_document_number": self._document_number(authority, decided_on, "许"),
            "category": item.category,
            "certificate_name": item.certificate_name,
            "licence_number": number,
            "content": f"{item.name}：{'、'.join(wordings)}",
            "approval_item_code": item.code,
            "decided_on": decided_on,
            "valid_from": decided_on,
            "valid_to": valid_to,
            "authority_name": authority.name,
            "authority_uscc": authority.uscc,
            "status": status,
            "status_changed_on": status_changed_on,
            "data_source_name": authority.name,
            "data_source_uscc": authority.uscc,
        }
        export = (
            "hz-health-licence"
            if item.code == "GGCSWSXK" and entity.city == "330100"
            else "zj-drc-licence"
        )
        return (
            _Licence(item, number, decided_on, authority),
            _Draft(export, "licence", decided_on, canonical),
        )

    def _licence_number(self, item: ApprovalItem, entity: _Entity, day: date) -> str:
        self._sequence[item.code] += 1
        serial = self._sequence[item.code]
        if item.code == "SPJYXK":
            kind = "2" if entity.profile.industry.startswith("H") else "1"
            return f"JY{kind}{entity.division}{serial:07d}"
        return f"{item.code[:2]}{entity.division}{day.year}{serial:06d}"

    def _document_number(self, department: Department, day: date, kind: str) -> str:
        key = f"{department.code}:{kind}:{day.year}"
        self._sequence[key] += 1
        return f"{_document_prefix(department)}{kind}〔{day.year}〕{self._sequence[key]}号"

    # -- penalties ------------------------------------------------------------------------
    def _penalty(
        self, entity: _Entity, licences: list[_Licence], missing: set[str], end: int
    ) -> list[_Draft]:
        rng = self._rng
        held = {licence.item.code: licence for licence in licences}
        options = [
            v
            for v in _VIOLATIONS
            if (v.needs_licence is None or v.needs_licence in held)
            and (v.unlicensed is None or v.unlicensed in missing)
            and (not v.industries or entity.profile.industry.startswith(v.industries))
        ]
        violation = rng.choices(options, [v.weight for v in options])[0]
        licence = held.get(violation.needs_licence or "")
        start = (licence.decided_on if licence else entity.established_on).toordinal() + 30
        if start > end:
            return []
        decided_on = date.fromordinal(rng.randint(start, end))
        authority: Department | None
        if violation.revokes and licence is not None:
            authority = licence.authority  # revoking is the approving department's power
        else:
            authority = self.province.department_of(violation.sector, entity.division) or (
                self.province.department_of(violation.sector, entity.city)
            )
        assert authority is not None
        fine = None
        if "FINE" in violation.categories:
            low, high = violation.fine
            fine = Decimal(rng.randint(int(low * 100), int(high * 100))) / 100
        value = rng.randint(5, 500) * 10
        confiscated = Decimal(value) / 10000 if violation.confiscation else None
        affected = None
        if violation.revokes and licence is not None:
            affected = f"{licence.item.certificate_name} {licence.number}"
        content = "；".join(
            f"{n}.{_penalty_wording(category, fine, confiscated, affected)}"
            for n, category in enumerate(violation.categories, start=1)
        )
        serious = affected is not None or (fine is not None and fine >= 1)
        # 公示期: three months for a warning or a small fine, three years otherwise.
        publicity = _add_months(decided_on, 36 if serious else 3)
        canonical = {
            "uscc": entity.uscc,
            "party_name": entity.name,
            "legal_representative": entity.legal_representative,
            "decision_number": self._document_number(authority, decided_on, "罚"),
            "violation_type": violation.violation_type,
            "violation_facts": violation.facts.format(value=value),
            "legal_basis": violation.legal_basis,
            "categories": list(violation.categories),
            "content": content + "。",
            "fine_amount": fine,
            "confiscated_amount": confiscated,
            "affected_licence": affected,
            "decided_on": decided_on,
            "publicity_until": publicity,
            "authority_name": authority.name,
            "authority_uscc": authority.uscc,
            "data_source_name": authority.name,
            "data_source_uscc": authority.uscc,
        }
        export = "zj-amr-penalty" if authority.sector == "market_regulation" else "zj-drc-penalty"
        return [_Draft(export, "penalty", decided_on, canonical)]

    # -- credit lists -------------------------------------------------------------------------
    def _listings(self, entity: _Entity, drafts: list[_Draft], end: int) -> list[_Draft]:
        rng = self._rng
        listings: list[tuple[str, date, str, str, Department]] = []
        serious = self.province.list_type("SERIOUS_ILLEGAL_DISHONEST")
        for draft in drafts:
            penalty = draft.canonical
            if draft.record_type != "penalty" or not penalty["affected_licence"]:
                continue
            authority = self.province.department_by_uscc(penalty["authority_uscc"])
            listed = draft.day.toordinal() + rng.randint(10, 60)
            # A market-regulation revocation puts the entity on the serious list, often.
            if authority.sector in serious.listing_sectors and listed <= end and rng.random() < 0.5:
                reason = f"因{penalty['violation_type']}受到吊销许可证件的行政处罚"
                listing = (serious.code, date.fromordinal(listed), reason, serious.legal_basis)
                listings.append((*listing, authority))
        shares = {
            "ABNORMAL_OPERATION": 0.04 if entity.enterprise else 0.0,
            "JUDGMENT_DEFAULTER": 0.01,
            "MAJOR_TAX_VIOLATION": 0.003 if entity.enterprise else 0.0,
            "SECTOR": 0.003 if entity.enterprise else 0.0,
        }
        for list_type, share in shares.items():
            if rng.random() >= share:
                continue
            start = entity.established_on.toordinal() + 90
            if start > end:
                continue
            reason, basis = rng.choice(_LIST_REASONS[list_type])
            lister = (
                entity.authority  # the registration authority keeps the 经营异常名录
                if list_type == "ABNORMAL_OPERATION"
                else self.province.department_of(
                    self.province.list_type(list_type).listing_sectors[0], entity.division
                )
            )
            assert lister is not None
            if "年度报告" in reason:
                # Annual reports are due by 30 June of the next year; listings follow in July.
                first_year = entity.established_on.year + 1
                if first_year > self.today.year:
                    continue
                year = rng.randint(first_year, self.today.year)
                start = max(start, date(year, 7, 1).toordinal())
                end_of_listing = min(end, date(year, 7, 31).toordinal())
                if start > end_of_listing:
                    continue
                day = date.fromordinal(rng.randint(start, end_of_listing))
            else:
                day = date.fromordinal(rng.randint(start, end))
            listings.append((list_type, day, reason, basis, lister))
        return [
            draft
            for listing in listings
            for draft in self._listing_drafts(entity, *listing, end=end)
        ]

    def _listing_drafts(
        self,
        entity: _Entity,
        list_type: str,
        listed_on: date,
        reason: str,
        basis: str,
        authority: Department,
        end: int,
    ) -> list[_Draft]:
        rng = self._rng
        info = self.province.list_type(list_type)
        planned = None
        if info.duration_years:
            planned = _add_months(listed_on, 12 * info.duration_years)
        self._sequence[f"entry:{list_type}"] += 1
        serial = self._sequence[f"entry:{list_type}"]
        entry_id = f"{_ENTRY_PREFIX[list_type]}{entity.division}{listed_on.year}{serial:06d}"
        if list_type == "JUDGMENT_DEFAULTER":
            self._sequence[f"case:{authority.code}:{listed_on.year}"] += 1
            serial = self._sequence[f"case:{authority.code}:{listed_on.year}"]
            document = f"（{listed_on.year}）浙{authority.division[2:]}执{serial}号"
        else:
            document = self._document_number(authority, listed_on, "信")
        listed = {
            "entry_id": entry_id,
            "action": "LISTED",
            "list_type": list_type,
            "uscc": entity.uscc,
            "entity_name": entity.name,
            "listing_authority_name": authority.name,
            "listing_authority_uscc": authority.uscc,
            "reason": reason,
            "legal_basis": basis,
            "document_number": document,
            "listed_on": listed_on,
            "planned_removal_on": planned,
            "removed_on": None,
            "removal_reason": None,
        }
        drafts = [_Draft("zj-drc-credit-list", "credit_list_entry", listed_on, listed)]
        removal: tuple[int, str] | None = None
        if planned is not None and planned.toordinal() <= end:
            removal = (planned.toordinal(), "EXPIRY")
        elif rng.random() < (0.5 if list_type == "ABNORMAL_OPERATION" else 0.2):
            wait = info.early_removal_after_years or 0
            removal = (listed_on.toordinal() + 365 * wait + rng.randint(20, 200), "CREDIT_REPAIR")
        if removal is not None and removal[0] <= end:
            removed_on = date.fromordinal(removal[0])
            removed = {**listed, "action": "REMOVED", "removed_on": removed_on}
            removed["removal_reason"] = removal[1]
            drafts.append(_Draft("zj-drc-credit-list", "credit_list_entry", removed_on, removed))
        return drafts


def _document_prefix(department: Department) -> str:
    """Like 杭西市监 or 浙应急: the city's and county's short names and the sector's."""
    division = department.division
    city = division[:4] + "00"
    prefix = _CITY_SHORT.get(city, _CITY_SHORT["330000"])[1] if division != "330000" else "浙"
    prefix += _COUNTY_SHORT.get(division, "")
    return prefix + _SECTOR_SHORT.get(department.sector, "")


def _add_months(day: date, months: int) -> date:
    """The same day ``months`` later (the 28th when that month is shorter)."""
    month = day.month - 1 + months
    year, month = day.year + month // 12, month % 12 + 1
    try:
        return day.replace(year=year, month=month)
    except ValueError:
        return day.replace(year=year, month=month, day=28)


def _yuan(amount: Decimal) -> str:
    """万元 as 元 for prose: 0.35 → 3500."""
    return format((amount * 10000).normalize(), "f")


def _penalty_wording(
    category: str, fine: Decimal | None, confiscated: Decimal | None, affected: str | None
) -> str:
    if category == "FINE" and fine is not None:
        return f"罚款人民币{_yuan(fine)}元"
    if category == "CONFISCATION" and confiscated is not None:
        return f"没收违法所得人民币{_yuan(confiscated)}元"
    if category == "LICENCE_SUSPENSION_OR_REVOCATION" and affected:
        return f"吊销{affected}"
    return _CATEGORY_WORDS.get(category, category)


def _make_undecodable(row: dict[str, Any], export: DepartmentExport) -> None:
    """Make sure the row's CSV line, written in the other encoding, does not decode.

    UTF-8 Chinese text often happens to be valid GB18030 (as mojibake); an odd number of
    three-byte characters before an ASCII byte breaks the pairing, so a character is added
    to the first text column until the line fails to decode as a reader would decode it.
    """
    wrong = _other_encoding(export.encoding)
    text_column = export.columns[1]
    for _ in range(8):
        line = _csv_line([row[c] for c in export.columns])
        try:
            line.encode(wrong).decode(_reading_encoding(export.encoding))
        except UnicodeDecodeError:
            return
        row[text_column] = f"{row[text_column]}店"
    raise AssertionError(f"could not make a line of {export.name} undecodable")


# -- writers --------------------------------------------------------------------------------


def _csv_line(values: Sequence[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(
        ["" if value is None else value for value in values]
    )
    return buffer.getvalue()


def _other_encoding(encoding: str) -> str:
    return "utf-8" if _reading_encoding(encoding) in ("gb18030", "gbk", "gb2312") else "gb18030"


def _reading_encoding(encoding: str) -> str:
    normal = encoding.lower().replace("_", "-")
    return "utf-8-sig" if normal == "utf-8" else normal


def _columns(records: Sequence[SampleRecord], columns: Sequence[str] | None) -> list[str]:
    if columns is not None:
        return list(columns)
    if not records:
        raise ValueError("no records to take the columns from; pass columns=")
    return list(records[0].row)


def write_csv(
    path: Path,
    records: Sequence[SampleRecord],
    encoding: str,
    columns: Sequence[str] | None = None,
) -> None:
    """Write rows as a department's CSV export in ``encoding`` (``utf-8-sig`` adds a BOM).

    A record whose defect is :attr:`Defect.WRONG_ENCODING` is written in the other
    encoding (UTF-8 bytes in a GB18030 file, GB18030 bytes in a UTF-8 file).
    """
    header = _columns(records, columns)
    normal = encoding.lower().replace("_", "-")
    bom = normal == "utf-8-sig"
    file_encoding = "utf-8" if bom else normal
    wrong = _other_encoding(encoding)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    with path.open("wb") as handle:
        if bom:
            handle.write(b"\xef\xbb\xbf")
        writer.writerow(header)
        handle.write(buffer.getvalue().encode(file_encoding))
        for record in records:
            buffer.seek(0)
            buffer.truncate()
            writer.writerow(["" if record.row[c] is None else record.row[c] for c in header])
            line_encoding = wrong if record.defect is Defect.WRONG_ENCODING else file_encoding
            handle.write(buffer.getvalue().encode(line_encoding))


def write_jsonl(path: Path, records: Sequence[SampleRecord]) -> None:
    """Write rows as JSON Lines (UTF-8), one object per record, keys in column order."""
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        for record in records:
            handle.write(json.dumps(record.row, ensure_ascii=False))
            handle.write("\n")


def write_xlsx(
    path: Path,
    records: Sequence[SampleRecord],
    columns: Sequence[str] | None = None,
    sheet: str = "导出数据",
) -> None:
    """Write rows as an Excel workbook (first sheet, header row), in write-only mode."""
    from openpyxl import Workbook

    header = _columns(records, columns)
    workbook = Workbook(write_only=True)
    worksheet = workbook.create_sheet(sheet)
    worksheet.append(header)
    for record in records:
        worksheet.append([record.row[c] for c in header])
    workbook.save(path)


# -- the exports on disk --------------------------------------------------------------------


@dataclass(frozen=True)
class ExportFile:
    """One written export and what it holds."""

    file: str
    connector: str
    department: str
    record_type: str
    format: str
    encoding: str
    records: int
    good: int
    bad: dict[str, int]  # expected reason code → records
    defects: dict[str, int]  # Defect → records


@dataclass(frozen=True)
class ExportManifest:
    """What :func:`generate_exports` wrote (also written as ``manifest.json``)."""

    seed: int
    bad_share: float
    today: date
    records: int
    files: tuple[ExportFile, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "bad_share": self.bad_share,
            "today": self.today.isoformat(),
            "records": self.records,
            "good": sum(f.good for f in self.files),
            "bad": sum(f.records - f.good for f in self.files),
            "files": [vars(f) for f in self.files],
        }


def write_export(path: Path, export: DepartmentExport, records: Sequence[SampleRecord]) -> None:
    """Write one export's records in its own format and encoding."""
    if export.file_format is FileFormat.CSV:
        write_csv(path, records, export.encoding, export.columns)
    elif export.file_format is FileFormat.JSONL:
        write_jsonl(path, records)
    else:
        write_xlsx(path, records, export.columns)


def generate_exports(
    out_dir: Path,
    records: int,
    seed: int,
    bad_share: float,
    today: date | None = None,
    province: SampleProvince | None = None,
    history_days: int = 3 * 365,
) -> ExportManifest:
    """Generate ``records`` records and write one export per shipped department export,
    plus ``manifest.json`` (per file: records, good, bad by expected reason code)."""
    generator = SampleGenerator(
        province, seed=seed, bad_share=bad_share, today=today, history_days=history_days
    )
    sample = generator.generate(records)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for name, export in generator.exports.items():
        exported = sample.exports[name]
        write_export(out_dir / export.file_name, export, exported)
        bad = [record for record in exported if not record.good]
        department = generator.province.department_by_uscc(export.mapping.department.uscc)
        files.append(
            ExportFile(
                file=export.file_name,
                connector=name,
                department=department.code,
                record_type=export.record_type,
                format=export.file_format.value,
                encoding=export.encoding,
                records=len(exported),
                good=len(exported) - len(bad),
                bad=dict(sorted(Counter(code for r in bad for code in r.expected_reasons).items())),
                defects=dict(sorted(Counter(str(r.defect) for r in bad).items())),
            )
        )
    manifest = ExportManifest(seed, bad_share, generator.today, records, tuple(files))
    (out_dir / "manifest.json").write_text(
        json.dumps(manifest.as_dict(), ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )
    return manifest


__all__ = [
    "DEPARTMENTS_DIR",
    "EXPECTED_REASONS",
    "Defect",
    "DepartmentExport",
    "ExportFile",
    "ExportManifest",
    "SampleGenerator",
    "SampleRecord",
    "SampleSet",
    "generate_exports",
    "load_exports",
    "write_csv",
    "write_export",
    "write_jsonl",
    "write_xlsx",
]
