import { describe, expect, it } from "vitest";
import { addKeysSql, deferrableKeys, dropKeysSql, keyName } from "./keys.js";

const create = (body: string[], options = ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci"): string =>
  ["CREATE TABLE `t` (", body.join(",\n"), options].join("\n");

describe("deferrableKeys", () => {
  it("takes plain and unique secondary keys verbatim, in order, and leaves the primary, fulltext and spatial keys and every key before one left in place", () => {
    const t = create([
      "  `id` int(11) NOT NULL",
      "  `a` int(11) DEFAULT NULL",
      "  `b` varchar(40) NOT NULL",
      "  `g` point NOT NULL",
      "  PRIMARY KEY (`id`)",
      "  UNIQUE KEY `b` (`b`)",
      "  SPATIAL KEY `g` (`g`)",
      "  KEY `a_desc` (`a` DESC,`b`(10)) COMMENT 'x, y'",
      "  KEY `we``ird` (`a`) IGNORED",
      "  FULLTEXT KEY `ft` (`b`)",
    ]);
    // `b` comes before the spatial key, which stays: added back it would come after it.
    expect(deferrableKeys(t)).toEqual(["KEY `a_desc` (`a` DESC,`b`(10)) COMMENT 'x, y'", "KEY `we``ird` (`a`) IGNORED"]);
    const noSpatial = t.replace("  SPATIAL KEY `g` (`g`),\n", "");
    expect(deferrableKeys(noSpatial)).toEqual(["UNIQUE KEY `b` (`b`)", "KEY `a_desc` (`a` DESC,`b`(10)) COMMENT 'x, y'", "KEY `we``ird` (`a`) IGNORED"]);
  });

  it("keeps a unique key of a table without a primary key (InnoDB may cluster the table on it)", () => {
    const t = create(["  `a` int(11) NOT NULL", "  `b` int(11) NOT NULL", "  UNIQUE KEY `a` (`a`)", "  KEY `b` (`b`)"]);
    expect(deferrableKeys(t)).toEqual(["KEY `b` (`b`)"]);
  });

  it("defers nothing of a table with a foreign key, a partitioned or system-versioned table, or one that is not InnoDB", () => {
    const keyed = ["  `id` int(11) NOT NULL", "  `p` int(11) NOT NULL", "  PRIMARY KEY (`id`)", "  KEY `p` (`p`)"];
    expect(deferrableKeys(create(keyed))).toEqual(["KEY `p` (`p`)"]);
    expect(deferrableKeys(create([...keyed, "  CONSTRAINT `fk` FOREIGN KEY (`p`) REFERENCES `parent` (`id`)"]))).toEqual([]);
    expect(deferrableKeys(create(keyed, ") ENGINE=InnoDB DEFAULT CHARSET=latin1\n PARTITION BY HASH (`id`)\nPARTITIONS 4"))).toEqual([]);
    expect(deferrableKeys(create(keyed, ") ENGINE=InnoDB DEFAULT CHARSET=latin1 WITH SYSTEM VERSIONING"))).toEqual([]);
    expect(deferrableKeys(create(keyed, ") ENGINE=MyISAM DEFAULT CHARSET=latin1"))).toEqual([]);
    expect(deferrableKeys(create(keyed, ") ENGINE=Aria DEFAULT CHARSET=latin1 PAGE_CHECKSUM=1"))).toEqual([]);
  });

  it("keeps a long unique key (USING HASH: a hidden column of its own)", () => {
    const t = create(["  `id` int(11) NOT NULL", "  `doc` blob NOT NULL", "  `k` int(11) NOT NULL", "  PRIMARY KEY (`id`)", "  KEY `j` (`k`)", "  UNIQUE KEY `doc` (`doc`) USING HASH", "  KEY `k` (`k`)"]);
    expect(deferrableKeys(t)).toEqual(["KEY `k` (`k`)"]);
  });
});

describe("the statements", () => {
  it("drop and add back every key of a table in one statement, names quoted as given", () => {
    const d = { db: "my`db", table: "t 1", keys: ["KEY `a` (`a`)", "UNIQUE KEY `we``ird` (`b`)"] };
    expect(keyName(d.keys[1] ?? "")).toBe("`we``ird`");
    expect(dropKeysSql(d)).toBe("ALTER TABLE `my``db`.`t 1` DROP KEY `a`, DROP KEY `we``ird`");
    expect(addKeysSql(d)).toBe("ALTER TABLE `my``db`.`t 1` ADD KEY `a` (`a`), ADD UNIQUE KEY `we``ird` (`b`)");
  });
});
