//! Every string a person reads in the app, in English and Russian. The portal's `LANG` picks
//! one; any other language falls back to English.

pub struct Strings {
    pub code: &'static str,
    pub title: &'static str,
    pub installed_title: &'static str,
    pub installed_text: &'static str,
    pub installing_finish: &'static str,
    pub installing_done: &'static str,
    pub no_bx24: &'static str,
    pub col_when: &'static str,
    pub col_item: &'static str,
    pub col_who: &'static str,
    pub col_what: &'static str,
    pub empty: &'static str,
    pub empty_filtered: &'static str,
    pub filter_type: &'static str,
    pub filter_any_type: &'static str,
    pub filter_item: &'static str,
    pub filter_user: &'static str,
    pub filter_from: &'static str,
    pub filter_to: &'static str,
    pub filter_search: &'static str,
    pub filter_apply: &'static str,
    pub filter_reset: &'static str,
    pub export: &'static str,
    pub newer: &'static str,
    pub older: &'static str,
    pub newest: &'static str,
    pub item_history: &'static str,
    pub whole_log: &'static str,
    pub automation: &'static str,
    pub user_prefix: &'static str,
    pub type_prefix: &'static str,
    pub action_add: &'static str,
    pub action_update: &'static str,
    pub action_delete: &'static str,
    pub note_first_seen: &'static str,
    pub note_collapsed: &'static str,
    pub note_deleted: &'static str,
    pub note_inaccessible: &'static str,
    pub banner_installing: &'static str,
    pub banner_reinstall: &'static str,
    pub banner_reinstall_what: &'static str,
    pub banner_payment: &'static str,
    pub banner_payment_what: &'static str,
    pub banner_waiting: &'static str,
    pub banner_session_expired: &'static str,
    pub live_on: &'static str,
}

pub const EN: Strings = Strings {
    code: "en",
    title: "Activity log",
    installed_title: "Activity log is installed",
    installed_text: "From now on every change to a smart-process item of this portal is recorded. Open the app to read the log.",
    installing_finish: "Finishing the installation…",
    installing_done: "Installation finished.",
    no_bx24: "The BX24 script could not be loaded.",
    col_when: "When",
    col_item: "Item",
    col_who: "By",
    col_what: "What changed",
    empty: "No changes recorded yet. Edit a smart-process item and it will appear here.",
    empty_filtered: "No changes match these filters.",
    filter_type: "Type",
    filter_any_type: "All types",
    filter_item: "Item id",
    filter_user: "User id",
    filter_from: "From",
    filter_to: "To",
    filter_search: "Title contains",
    filter_apply: "Apply",
    filter_reset: "Reset",
    export: "Download CSV",
    newer: "← Newer",
    older: "Older →",
    newest: "Newest",
    item_history: "History of this item",
    whole_log: "Whole log",
    automation: "Automation",
    user_prefix: "user",
    type_prefix: "type",
    action_add: "created",
    action_update: "changed",
    action_delete: "deleted",
    note_first_seen: "first seen: its current state is the starting point",
    note_collapsed: "changed again moments later: see the next entry",
    note_deleted: "the item is deleted",
    note_inaccessible: "the item is not accessible to the app",
    banner_installing: "The installation is still being finished; new changes appear once it is done.",
    banner_reinstall: "Changes are not being recorded. The platform no longer accepts this app's access to the portal.",
    banner_reinstall_what: "A portal administrator should reinstall the app (Applications → My applications → Activity log → Reinstall). The log below is kept.",
    banner_payment: "Changes are not being recorded. The app's paid or trial period is over.",
    banner_payment_what: "Renew it in Bitrix24 Market, then reopen the app.",
    banner_waiting: "change(s) are still being fetched from the portal",
    banner_session_expired: "This page has been open too long. Reopen the app to go on.",
    live_on: "Updates live",
};

pub const RU: Strings = Strings {
    code: "ru",
    title: "Журнал изменений",
    installed_title: "Журнал изменений установлен",
    installed_text: "Теперь каждое изменение элементов смарт-процессов этого портала записывается. Откройте приложение, чтобы посмотреть журнал.",
    installing_finish: "Завершаем установку…",
    installing_done: "Установка завершена.",
    no_bx24: "Не удалось загрузить скрипт BX24.",
    col_when: "Когда",
    col_item: "Элемент",
    col_who: "Кто",
    col_what: "Что изменилось",
    empty: "Изменений пока нет. Измените элемент смарт-процесса, и он появится здесь.",
    empty_filtered: "Нет изменений, подходящих под фильтр.",
    filter_type: "Тип",
    filter_any_type: "Все типы",
    filter_item: "ID элемента",
    filter_user: "ID пользователя",
    filter_from: "С",
    filter_to: "По",
    filter_search: "Название содержит",
    filter_apply: "Применить",
    filter_reset: "Сбросить",
    export: "Скачать CSV",
    newer: "← Новее",
    older: "Старее →",
    newest: "Последние",
    item_history: "История этого элемента",
    whole_log: "Весь журнал",
    automation: "Автоматизация",
    user_prefix: "пользователь",
    type_prefix: "тип",
    action_add: "создан",
    action_update: "изменён",
    action_delete: "удалён",
    note_first_seen: "впервые замечен: текущее состояние взято за исходное",
    note_collapsed: "сразу изменён снова: см. следующую запись",
    note_deleted: "элемент удалён",
    note_inaccessible: "элемент недоступен приложению",
    banner_installing: "Установка ещё завершается; новые изменения появятся после неё.",
    banner_reinstall: "Изменения не записываются. Платформа больше не принимает доступ приложения к порталу.",
    banner_reinstall_what: "Администратору портала нужно переустановить приложение (Приложения → Мои приложения → Журнал изменений → Переустановить). Журнал сохранён.",
    banner_payment: "Изменения не записываются. Оплаченный или пробный период приложения закончился.",
    banner_payment_what: "Продлите его в Битрикс24 Маркете и откройте приложение снова.",
    banner_waiting: "изменений ещё загружаются с портала",
    banner_session_expired: "Страница открыта слишком долго. Откройте приложение заново.",
    live_on: "Обновляется сразу",
};

/// The strings for a portal's `LANG`.
pub fn strings(lang: &str) -> &'static Strings {
    if lang.eq_ignore_ascii_case("ru") {
        &RU
    } else {
        &EN
    }
}

/// A field's name for a reader; custom fields keep their code.
pub fn field_label(field: &str, lang: &str) -> String {
    let ru = lang == "ru";
    let (en, ru_label) = match field {
        "title" => ("Title", "Название"),
        "stageId" => ("Stage", "Стадия"),
        "categoryId" => ("Pipeline", "Воронка"),
        "opportunity" => ("Amount", "Сумма"),
        "currencyId" => ("Currency", "Валюта"),
        "assignedById" => ("Responsible", "Ответственный"),
        "begindate" => ("Start date", "Дата начала"),
        "closedate" => ("End date", "Дата завершения"),
        "companyId" => ("Company", "Компания"),
        "contactId" => ("Contact", "Контакт"),
        "contactIds" => ("Contacts", "Контакты"),
        "observers" => ("Observers", "Наблюдатели"),
        "sourceId" => ("Source", "Источник"),
        "sourceDescription" => ("Source details", "Об источнике"),
        "isManualOpportunity" => ("Manual amount", "Сумма вручную"),
        "taxValue" => ("Tax", "Налог"),
        "opened" => ("Available to everyone", "Доступен всем"),
        "mycompanyId" => ("Your company", "Ваша компания"),
        _ => return field.to_owned(),
    };
    (if ru { ru_label } else { en }).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_languages_fall_back_to_english() {
        assert_eq!(strings("ru").code, "ru");
        assert_eq!(strings("RU").code, "ru");
        assert_eq!(strings("de").code, "en");
        assert_eq!(field_label("stageId", "ru"), "Стадия");
        assert_eq!(field_label("ufCrm5_Color", "ru"), "ufCrm5_Color");
    }
}
