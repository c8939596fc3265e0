"""Mandarin tone sandhi on jieba words (neutral tones, 不/一 changes, 3-3 sandhi).

Re-implements the behaviour of the official ``text/tone_sandhi.py`` (from PaddleSpeech):
the same word lists, the same merge steps before pinyin lookup and the same rule order
(不 -> 一 -> neutral tone -> third tone). Finals are pypinyin ``FINALS_TONE3`` strings whose
last character is the tone digit (5 = neutral).
"""

from __future__ import annotations

import warnings
from functools import lru_cache

with warnings.catch_warnings():
    # jieba imports the deprecated pkg_resources; the warning is not ours to fix.
    warnings.simplefilter("ignore")
    import jieba
from pypinyin import Style, lazy_pinyin

# Words whose last syllable is read in the neutral tone.
_NEUTRAL_WORDS = frozenset(
    """
    麻烦 麻利 鸳鸯 高粱 骨头 骆驼 马虎 首饰 馒头 馄饨 风筝 难为 队伍 阔气 闺女 门道 锄头 铺盖 铃铛 铁匠
    钥匙 里脊 里头 部分 那么 道士 造化 迷糊 连累 这么 这个 运气 过去 软和 转悠 踏实 跳蚤 跟头 趔趄 财主
    豆腐 讲究 记性 记号 认识 规矩 见识 裁缝 补丁 衣裳 衣服 衙门 街坊 行李 行当 蛤蟆 蘑菇 薄荷 葫芦 葡萄
    萝卜 荸荠 苗条 苗头 苍蝇 芝麻 舒服 舒坦 舌头 自在 膏药 脾气 脑袋 脊梁 能耐 胳膊 胭脂 胡萝 胡琴 胡同
    聪明 耽误 耽搁 耷拉 耳朵 老爷 老实 老婆 老头 老太 翻腾 罗嗦 罐头 编辑 结实 红火 累赘 糨糊 糊涂 精神
    粮食 簸箕 篱笆 算计 算盘 答应 笤帚 笑语 笑话 窟窿 窝囊 窗户 稳当 稀罕 称呼 秧歌 秀气 秀才 福气 祖宗
    砚台 码头 石榴 石头 石匠 知识 眼睛 眯缝 眨巴 眉毛 相声 盘算 白净 痢疾 痛快 疟疾 疙瘩 疏忽 畜生 生意
    甘蔗 琵琶 琢磨 琉璃 玻璃 玫瑰 玄乎 狐狸 状元 特务 牲口 牙碜 牌楼 爽快 爱人 热闹 烧饼 烟筒 烂糊 点心
    炊帚 灯笼 火候 漂亮 滑溜 溜达 温和 清楚 消息 浪头 活泼 比方 正经 欺负 模糊 槟榔 棺材 棒槌 棉花 核桃
    栅栏 柴火 架势 枕头 枇杷 机灵 本事 木头 木匠 朋友 月饼 月亮 暖和 明白 时候 新鲜 故事 收拾 收成 提防
    挖苦 挑剔 指甲 指头 拾掇 拳头 拨弄 招牌 招呼 抬举 护士 折腾 扫帚 打量 打算 打点 打扮 打听 打发 扎实
    扁担 戒指 懒得 意识 意思 情形 悟性 怪物 思量 怎么 念头 念叨 快活 忙活 志气 心思 得罪 张罗 弟兄 开通
    应酬 庄稼 干事 帮手 帐篷 希罕 师父 师傅 巴结 巴掌 差事 工夫 岁数 屁股 尾巴 少爷 小气 小伙 将就 对头
    对付 寡妇 家伙 客气 实在 官司 学问 学生 字号 嫁妆 媳妇 媒人 婆家 娘家 委屈 姑娘 姐夫 妯娌 妥当 妖精
    奴才 女婿 头发 太阳 大爷 大方 大意 大夫 多少 多么 外甥 壮实 地道 地方 在乎 困难 嘴巴 嘱咐 嘟囔 嘀咕
    喜欢 喇嘛 喇叭 商量 唾沫 哑巴 哈欠 哆嗦 咳嗽 和尚 告诉 告示 含糊 吓唬 后头 名字 名堂 合同 吆喝 叫唤
    口袋 厚道 厉害 千斤 包袱 包涵 匀称 勤快 动静 动弹 功夫 力气 前头 刺猬 刺激 别扭 利落 利索 利害 分析
    出息 凑合 凉快 冷战 冤枉 冒失 养活 关系 先生 兄弟 便宜 使唤 佩服 作坊 体面 位置 似的 伙计 休息 什么
    人家 亲戚 亲家 交情 云彩 事情 买卖 主意 丫头 丧气 两口 东西 东家 世故 不由 不在 下水 下巴 上头 上司
    丈夫 丈人 一辈 那个 菩萨 父亲 母亲 咕噜 邋遢 费用 冤家 甜头 介绍 荒唐 大人 泥鳅 幸福 熟悉 计划 扑腾
    蜡烛 姥爷 照顾 喉咙 吉他 弄堂 蚂蚱 凤凰 拖沓 寒碜 糟蹋 倒腾 报复 逻辑 盘缠 喽啰 牢骚 咖喱 扫把 惦记
    """.split()
)
_NOT_NEUTRAL_WORDS = frozenset("男子 女子 分子 原子 量子 莲子 石子 瓜子 电子 人人 虎虎".split())
_SENTENCE_PUNCT = "：，；。？！“”‘’':,;.?!"
_NEUTRAL_ENDINGS = "吧呢哈啊呐噻嘛吖嗨呐哦哒额滴哩哟喽啰耶喔诶"


def _tone(final: str, tone: str) -> str:
    return final[:-1] + tone


def _all_third(finals: list[str]) -> bool:
    return all(f[-1] == "3" for f in finals)


def _is_reduplication(word: str) -> bool:
    return len(word) == 2 and word[0] == word[1]


@lru_cache(maxsize=4096)
def _finals_tone3(word: str) -> tuple[str, ...]:
    return tuple(lazy_pinyin(word, neutral_tone_with_five=True, style=Style.FINALS_TONE3))


def _split_word(word: str) -> list[str]:
    """Two-way split of a word at its shortest jieba search sub-word (official heuristic)."""
    subwords = sorted(jieba.cut_for_search(word), key=len)
    first = subwords[0]
    if word.find(first) == 0:
        return [first, word[len(first):]]
    return [word[: -len(first)], first]


class ToneSandhi:
    """Stateless; an instance exists so call sites read like the official code."""

    # --------------------------------------------------------------- per-word rules
    def _neutral(self, word: str, pos: str, finals: list[str]) -> list[str]:
        # Reduplicated nouns/verbs/adjectives: 奶奶, 试试, 旺旺.
        for j in range(1, len(word)):
            if word[j] == word[j - 1] and pos[:1] in {"n", "v", "a"} and word not in _NOT_NEUTRAL_WORDS:
                finals[j] = _tone(finals[j], "5")
        ge = word.find("个")
        last = word[-1] if word else ""
        if last and last in _NEUTRAL_ENDINGS:
            finals[-1] = _tone(finals[-1], "5")
        elif last and last in "的地得":
            finals[-1] = _tone(finals[-1], "5")
        elif len(word) == 1 and word in "了着过" and pos in {"ul", "uz", "ug"}:
            finals[-1] = _tone(finals[-1], "5")
        elif len(word) > 1 and last in "们子" and pos in {"r", "n"} and word not in _NOT_NEUTRAL_WORDS:
            finals[-1] = _tone(finals[-1], "5")
        elif len(word) > 1 and last in "上下里" and pos in {"s", "l", "f"}:
            finals[-1] = _tone(finals[-1], "5")
        elif len(word) > 1 and last in "来去" and word[-2] in "上下进出回过起开":
            finals[-1] = _tone(finals[-1], "5")
        elif (ge >= 1 and (word[ge - 1].isnumeric() or word[ge - 1] in "几有两半多各整每做是")) or word == "个":
            finals[ge] = _tone(finals[ge], "5")
        elif word in _NEUTRAL_WORDS or word[-2:] in _NEUTRAL_WORDS:
            finals[-1] = _tone(finals[-1], "5")

        parts = _split_word(word)
        groups = [finals[: len(parts[0])], finals[len(parts[0]):]]
        for i, part in enumerate(parts):
            if (part in _NEUTRAL_WORDS or part[-2:] in _NEUTRAL_WORDS) and groups[i]:
                groups[i][-1] = _tone(groups[i][-1], "5")
        return groups[0] + groups[1]

    def _bu(self, word: str, finals: list[str]) -> list[str]:
        if len(word) == 3 and word[1] == "不":  # 看不懂
            finals[1] = _tone(finals[1], "5")
        else:
            for i, ch in enumerate(word):
                if ch == "不" and i + 1 < len(word) and finals[i + 1][-1] == "4":  # 不怕 -> bu2
                    finals[i] = _tone(finals[i], "2")
        return finals

    def _yi(self, word: str, finals: list[str]) -> list[str]:
        if "一" in word and all(c.isnumeric() for c in word if c != "一"):
            return finals  # number strings: 一零零
        if len(word) == 3 and word[1] == "一" and word[0] == word[-1]:
            finals[1] = _tone(finals[1], "5")  # 看一看
        elif word.startswith("第一"):
            finals[1] = _tone(finals[1], "1")  # ordinal stays yi1
        else:
            for i, ch in enumerate(word):
                if ch == "一" and i + 1 < len(word):
                    if finals[i + 1][-1] == "4":
                        finals[i] = _tone(finals[i], "2")  # 一段
                    elif word[i + 1] not in _SENTENCE_PUNCT:
                        finals[i] = _tone(finals[i], "4")  # 一天
        return finals

    def _third(self, word: str, finals: list[str]) -> list[str]:
        if len(word) == 2 and _all_third(finals):
            finals[0] = _tone(finals[0], "2")
        elif len(word) == 3:
            parts = _split_word(word)
            if _all_third(finals):
                if len(parts[0]) == 2:  # 蒙古/包
                    finals[0] = _tone(finals[0], "2")
                    finals[1] = _tone(finals[1], "2")
                elif len(parts[0]) == 1:  # 纸/老虎
                    finals[1] = _tone(finals[1], "2")
            else:
                groups = [finals[: len(parts[0])], finals[len(parts[0]):]]
                for i, sub in enumerate(groups):
                    if _all_third(sub) and len(sub) == 2:  # 所有/人
                        sub[0] = _tone(sub[0], "2")
                    elif (i == 1 and sub and not _all_third(sub) and sub[0][-1] == "3"
                          and groups[0] and groups[0][-1][-1] == "3"):  # 好/喜欢
                        groups[0][-1] = _tone(groups[0][-1], "2")
                finals = groups[0] + groups[1]
        elif len(word) == 4:  # idioms: two pairs
            pairs = [finals[:2], finals[2:]]
            finals = []
            for sub in pairs:
                if _all_third(sub):
                    sub[0] = _tone(sub[0], "2")
                finals += sub
        return finals

    def modified_tone(self, word: str, pos: str, finals: list[str]) -> list[str]:
        finals = self._bu(word, list(finals))
        finals = self._yi(word, finals)
        finals = self._neutral(word, pos, finals)
        return self._third(word, finals)

    # --------------------------------------------------------------- merges before lookup
    @staticmethod
    def _merge_bu(seg: list[list[str]]) -> list[list[str]]:
        out: list[list[str]] = []
        last = ""
        for word, pos in seg:
            if last == "不":
                word = last + word
            if word != "不":
                out.append([word, pos])
            last = word
        if last == "不":
            out.append([last, "d"])
        return out

    @staticmethod
    def _merge_yi(seg: list[list[str]]) -> list[list[str]]:
        # 听/一/听 -> 听一听
        step: list[list[str]] = []
        for i, (word, pos) in enumerate(seg):
            if (0 < i < len(seg) - 1 and word == "一" and seg[i - 1][0] == seg[i + 1][0]
                    and seg[i - 1][1] == "v" and step):
                step[-1][0] = step[-1][0] + "一" + step[-1][0]
            elif i >= 2 and seg[i - 1][0] == "一" and seg[i - 2][0] == word and pos == "v":
                continue  # the second 听, already folded into 听一听
            else:
                step.append([word, pos])
        # a lone 一 swallows the next word
        out: list[list[str]] = []
        for word, pos in step:
            if out and out[-1][0] == "一":
                out[-1][0] += word
            else:
                out.append([word, pos])
        return out

    @staticmethod
    def _merge_reduplication(seg: list[list[str]]) -> list[list[str]]:
        out: list[list[str]] = []
        for word, pos in seg:
            if out and word == out[-1][0]:
                out[-1][0] += word
            else:
                out.append([word, pos])
        return out

    @staticmethod
    def _merge_third_tones(seg: list[list[str]], whole_words: bool) -> list[list[str]]:
        """Merge neighbours so 3-3 sandhi sees them as one word (at most 3 characters).

        ``whole_words``: both words entirely third tone (first pass); otherwise only the
        boundary syllables (second pass)."""
        finals = [_finals_tone3(w) for w, _ in seg]
        out: list[list[str]] = []
        merged = [False] * len(seg)
        for i, (word, pos) in enumerate(seg):
            if i > 0 and not merged[i - 1] and finals[i - 1] and finals[i]:
                if whole_words:
                    hit = _all_third(list(finals[i - 1])) and _all_third(list(finals[i]))
                else:
                    hit = finals[i - 1][-1][-1] == "3" and finals[i][0][-1] == "3"
                if hit and not _is_reduplication(seg[i - 1][0]) and len(seg[i - 1][0]) + len(word) <= 3:
                    out[-1][0] += word
                    merged[i] = True
                    continue
            out.append([word, pos])
        return out

    @staticmethod
    def _merge_er(seg: list[list[str]]) -> list[list[str]]:
        out: list[list[str]] = []
        for i, (word, pos) in enumerate(seg):
            if i > 0 and word == "儿" and seg[i - 1][0] != "#" and out:
                out[-1][0] += word
            else:
                out.append([word, pos])
        return out

    def pre_merge_for_modify(self, seg: list[tuple[str, str]]) -> list[tuple[str, str]]:
        merged: list[list[str]] = [[w, p] for w, p in seg]
        merged = self._merge_bu(merged)
        merged = self._merge_yi(merged)
        merged = self._merge_reduplication(merged)
        merged = self._merge_third_tones(merged, whole_words=True)
        merged = self._merge_third_tones(merged, whole_words=False)
        merged = self._merge_er(merged)
        return [(w, p) for w, p in merged]
