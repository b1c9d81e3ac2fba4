"use strict";(self.rspackChunkbedside_jupyterlab=self.rspackChunkbedside_jupyterlab||[]).push([[232],{475(e,r,o){var a=o(601),t=o.n(a),n=o(314),i=(o.n(n))()(t());i.push([e.id,`/* bedside: cell badges and the session panel. Colours come from JupyterLab's theme variables. */
.bedside-CellBadge {
  display: flex;
  flex-wrap: wrap;
  gap: 6px;
  align-items: baseline;
  padding: 2px 8px 4px var(--jp-cell-prompt-width, 64px);
  font-size: var(--jp-ui-font-size0);
  color: var(--jp-ui-font-color2);
}

.bedside-chip {
  border-radius: 8px;
  padding: 0 6px;
  font-weight: 600;
  text-transform: uppercase;
  letter-spacing: 0.03em;
  color: white;
  background: var(--jp-layout-color3);
}

.bedside-chip-released {
  background: var(--jp-success-color1);
}

.bedside-chip-redacted {
  background: var(--jp-warn-color1);
}

.bedside-chip-blocked {
  background: var(--jp-error-color1);
}

.bedside-rule {
  font-family: var(--jp-code-font-family);
  color: var(--jp-ui-font-color1);
}

.bedside-receipt-ok {
  color: var(--jp-success-color1);
}

.bedside-receipt-bad {
  color: var(--jp-error-color1);
  font-weight: 600;
}

.bedside-why,
.bedside-advice {
  flex-basis: 100%;
}

.bedside-advice {
  color: var(--jp-ui-font-color1);
}

.bedside-SessionPanel {
  padding: 8px 12px;
  overflow-y: auto;
  background: var(--jp-layout-color1);
  color: var(--jp-ui-font-color1);
  font-size: var(--jp-ui-font-size1);
  min-width: 340px;
}

.bedside-SessionPanel h2 {
  font-size: var(--jp-ui-font-size2);
  margin: 4px 0 8px;
}

.bedside-SessionPanel h3 {
  font-size: var(--jp-ui-font-size1);
  margin: 12px 0 4px;
}

.bedside-buttons {
  display: flex;
  flex-wrap: wrap;
  gap: 4px;
  margin-bottom: 8px;
}

.bedside-message[data-kind='error'] {
  color: var(--jp-error-color1);
}

.bedside-fields {
  display: grid;
  grid-template-columns: 8.5em minmax(0, 1fr);
  gap: 2px 8px;
}

.bedside-fields dt {
  color: var(--jp-ui-font-color2);
}

.bedside-fields dd {
  margin: 0;
  overflow-wrap: anywhere;
}

.bedside-IntentForm-row {
  display: grid;
  grid-template-columns: 10em 22em;
  gap: 6px;
  align-items: center;
  margin: 4px 0;
}

.bedside-release-head {
  display: flex;
  align-items: center;
  gap: 8px;
}

.bedside-small {
  font-size: var(--jp-ui-font-size0);
  padding: 0 8px;
  height: 22px;
}

.bedside-release {
  border-top: 1px solid var(--jp-border-color2);
  padding: 6px 0;
  display: flex;
  flex-direction: column;
  gap: 3px;
  align-items: flex-start;
}

.bedside-release-title {
  display: flex;
  gap: 6px;
  align-items: baseline;
}

.bedside-release-name {
  font-weight: 600;
}

.bedside-release-meta,
.bedside-release-note {
  color: var(--jp-ui-font-color2);
}

.bedside-release-pending {
  background: var(--jp-warn-color1);
}

.bedside-release-approved,
.bedside-release-delivered {
  background: var(--jp-success-color1);
}

.bedside-release-denied,
.bedside-release-refused,
.bedside-release-failed {
  background: var(--jp-error-color1);
}

.bedside-release-result[data-kind='ok'] {
  color: var(--jp-success-color1);
}

.bedside-release-result[data-kind='error'] {
  color: var(--jp-error-color1);
  font-weight: 600;
}
`,""]),o.d(r,{},{A:i})},314(e){e.exports=function(e){var r=[];return r.toString=function(){return this.map(function(r){var o="",a=void 0!==r[5];return r[4]&&(o+="@supports (".concat(r[4],") {")),r[2]&&(o+="@media ".concat(r[2]," {")),a&&(o+="@layer".concat(r[5].length>0?" ".concat(r[5]):""," {")),o+=e(r),a&&(o+="}"),r[2]&&(o+="}"),r[4]&&(o+="}"),o}).join("")},r.i=function(e,o,a,t,n){"string"==typeof e&&(e=[[null,e,void 0]]);var i={};if(a)for(var s=0;s<this.length;s++){var d=this[s][0];null!=d&&(i[d]=!0)}for(var l=0;l<e.length;l++){var c=[].concat(e[l]);a&&i[c[0]]||(void 0!==n&&(void 0===c[5]||(c[1]="@layer".concat(c[5].length>0?" ".concat(c[5]):""," {").concat(c[1],"}")),c[5]=n),o&&(c[2]&&(c[1]="@media ".concat(c[2]," {").concat(c[1],"}")),c[2]=o),t&&(c[4]?(c[1]="@supports (".concat(c[4],") {").concat(c[1],"}"),c[4]=t):c[4]="".concat(t)),r.push(c))}},r}},601(e){e.exports=function(e){return e[1]}},72(e){var r=[];function o(e){for(var o=-1,a=0;a<r.length;a++)if(r[a].identifier===e){o=a;break}return o}function a(e,a){for(var t={},n=[],i=0;i<e.length;i++){var s=e[i],d=a.base?s[0]+a.base:s[0],l=t[d]||0,c="".concat(d," ").concat(l);t[d]=l+1;var p=o(c),u={css:s[1],media:s[2],sourceMap:s[3],supports:s[4],layer:s[5]};if(-1!==p)r[p].references++,r[p].updater(u);else{var f=function(e,r){var o=r.domAPI(r);return o.update(e),function(r){r?(r.css!==e.css||r.media!==e.media||r.sourceMap!==e.sourceMap||r.supports!==e.supports||r.layer!==e.layer)&&o.update(e=r):o.remove()}}(u,a);a.byIndex=i,r.splice(i,0,{identifier:c,updater:f,references:1})}n.push(c)}return n}e.exports=function(e,t){var n=a(e=e||[],t=t||{});return function(e){e=e||[];for(var i=0;i<n.length;i++){var s=o(n[i]);r[s].references--}for(var d=a(e,t),l=0;l<n.length;l++){var c=o(n[l]);0===r[c].references&&(r[c].updater(),r.splice(c,1))}n=d}}},659(e){var r={};e.exports=function(e,o){var a=function(e){if(void 0===r[e]){var o=document.querySelector(e);if(window.HTMLIFrameElement&&o instanceof window.HTMLIFrameElement)try{o=o.contentDocument.head}catch(e){o=null}r[e]=o}return r[e]}(e);if(!a)throw Error("Couldn't find a style target. This probably means that the value for the 'insert' parameter is invalid.");a.appendChild(o)}},540(e){e.exports=function(e){var r=document.createElement("style");return e.setAttributes(r,e.attributes),e.insert(r,e.options),r}},56(e,r,o){e.exports=function(e){var r=o.nc;r&&e.setAttribute("nonce",r)}},825(e){e.exports=function(e){if("u"<typeof document)return{update:function(){},remove:function(){}};var r=e.insertStyleElement(e);return{update:function(o){var a,t,n;a="",o.supports&&(a+="@supports (".concat(o.supports,") {")),o.media&&(a+="@media ".concat(o.media," {")),(t=void 0!==o.layer)&&(a+="@layer".concat(o.layer.length>0?" ".concat(o.layer):""," {")),a+=o.css,t&&(a+="}"),o.media&&(a+="}"),o.supports&&(a+="}"),(n=o.sourceMap)&&"u">typeof btoa&&(a+="\n/*# sourceMappingURL=data:application/json;base64,".concat(btoa(unescape(encodeURIComponent(JSON.stringify(n))))," */")),e.styleTagTransform(a,r,e.options)},remove:function(){var e;null===(e=r).parentNode||e.parentNode.removeChild(e)}}}},113(e){e.exports=function(e,r){if(r.styleSheet)r.styleSheet.cssText=e;else{for(;r.firstChild;)r.removeChild(r.firstChild);r.appendChild(document.createTextNode(e))}}},579(e,r,o){var a=o(72),t=o.n(a),n=o(825),i=o.n(n),s=o(659),d=o.n(s),l=o(56),c=o.n(l),p=o(540),u=o.n(p),f=o(113),v=o.n(f),b=o(475),m={};m.styleTagTransform=v(),m.setAttributes=c(),m.insert=d().bind(null,"head"),m.domAPI=i(),m.insertStyleElement=u(),t()(b.A,m),b.A&&b.A.locals&&b.A.locals}}]);